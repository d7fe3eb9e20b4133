#!/usr/bin/env bash
# README's tern-img example, run as written in a scratch directory (with
# build/ pointing at the build): every verb the README shows must work.
# Usage: readme_test.sh SOURCE_DIR BUILD_DIR
set -euo pipefail
source_dir=$1
build=$(cd "$2" && pwd)
scratch=$(mktemp -d "$build/tmp-readme-XXXXXX")
trap 'rm -rf "$scratch"' EXIT
# The sh block after the marker, up to its closing fence.
awk '/<!-- tern-img example/ {on = 1; next} on && /^```sh/ {inside = 1; next} inside && /^```/ {exit} inside {print}' \
  "$source_dir/README.md" > "$scratch/example.sh"
lines=$(grep -c 'build/tern-img' "$scratch/example.sh")
for verb in create info io map compare check measure convert rebase commit resize bench; do
  grep -q "build/tern-img $verb" "$scratch/example.sh" || { echo "readme_test: README shows no $verb"; exit 1; }
done
ln -s "$build" "$scratch/build"
cd "$scratch"
bash -euo pipefail -x example.sh > output.txt 2>&1 || { cat output.txt; echo "readme_test: the example failed"; exit 1; }
for want in "Content mismatch at offset 4194304!" "Images are identical." "Image committed." "required size: "; do
  grep -qF "$want" output.txt || { cat output.txt; echo "readme_test: no \"$want\""; exit 1; }
done
echo "readme_test: ok ($lines commands)"

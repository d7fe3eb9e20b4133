#!/usr/bin/env bash
# The install tree and the .deb (cmake/install.cmake): `cmake --install`
# into a scratch prefix, then `cpack -G DEB`, the package's Depends checked
# against what Debian provides here, and the package unpacked into a scratch
# root (dpkg -x: no privileges, no dpkg database) whose programs must run.
# Usage: package_test.sh BUILD_DIR
set -euo pipefail
build=$(cd "$1" && pwd)
scratch=$(mktemp -d "$build/tmp-package-XXXXXX")
trap 'rm -rf "$scratch"' EXIT

fail() { echo "package_test: $*" >&2; exit 1; }

# 1. cmake --install: programs, man pages, completions where they belong.
cmake --install "$build" --prefix "$scratch/prefix" > "$scratch/install.log"
for f in bin/tern bin/tern-img bin/tern-remote \
         share/man/man1/tern.1 share/man/man1/tern-img.1 share/man/man1/tern-remote.1 \
         share/bash-completion/completions/tern share/bash-completion/completions/tern-img \
         share/bash-completion/completions/tern-remote; do
  [ -e "$scratch/prefix/$f" ] || fail "cmake --install did not install $f"
done
grep -q '^\.SH SYNOPSIS' "$scratch/prefix/share/man/man1/tern-img.1" || fail "tern-img.1 is not a man page"
bash -n "$scratch/prefix/share/bash-completion/completions/tern-img" || fail "tern-img completion does not parse"

# 2. The .deb.
(cd "$build" && cpack -G DEB -B "$scratch/deb" > "$scratch/cpack.log") || { cat "$scratch/cpack.log"; fail "cpack failed"; }
deb=$(ls "$scratch"/deb/tern_*.deb)
depends=$(dpkg-deb -f "$deb" Depends)
echo "Depends: $depends"
for need in libc6 libstdc++6 libzstd1 zlib1g; do
  [[ ",$depends" == *", $need "* || ",$depends" == *",$need "* ]] || fail "Depends lacks $need: $depends"
done
# Every dependency is a Debian package installed here (a Debian 12 host).
IFS=',' read -ra deps <<< "$depends"
for d in "${deps[@]}"; do
  name=$(echo "$d" | awk '{print $1}')
  dpkg-query -W -f='${Status}' "$name" 2>/dev/null | grep -q "install ok installed" || fail "$name is not installed"
done
contents=$(dpkg-deb -c "$deb")
[[ $contents == *" ./usr/bin/tern-img"* ]] || fail "no /usr/bin/tern-img in the package"

# 3. Unpacked into a scratch root, the programs run.
dpkg -x "$deb" "$scratch/root"
version=$("$scratch/root/usr/bin/tern" --version) && [[ $version == "tern version "* ]] || fail "tern --version: $version"
echo "$version"
version=$("$scratch/root/usr/bin/tern-remote" --version) && [[ $version == "tern-remote version "* ]] ||
  fail "tern-remote --version: $version"
"$scratch/root/usr/bin/tern-img" create -f qcow2 "$scratch/disk.qcow2" 64M > /dev/null
info=$("$scratch/root/usr/bin/tern-img" info "$scratch/disk.qcow2")
[[ $info == *"virtual size: 64 MiB (67108864 bytes)"* ]] || fail "tern-img info: $info"
echo "package_test: ok ($(basename "$deb"))"

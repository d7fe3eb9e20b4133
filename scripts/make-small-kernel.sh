#!/usr/bin/env bash
# Builds the small test kernel from Debian's kernel source package:
#   build/guest/small/vmlinux   the kernel as an ELF64 (what the tests boot:
#                               no decompressor to run under an emulated KVM)
#   build/guest/small/bzImage   the same kernel, LZ4-compressed bzImage
#   build/guest/small/config    its .config
# `make tinyconfig`, then scripts/small-kernel.config merged over it: virtio-pci,
# virtio-mmio, virtio-blk, ext4, ACPI, the 8250 console and IA32 emulation
# built in; no modules, kprobes, ftrace or crypto self-tests. The patches in
# scripts/small-kernel-patches/ are applied to the source first; there is one:
# on a PVM host (kvm_pvm), `int $0x80` from 32-bit user mode reaches the kernel
# as #UD, which the patched kernel takes as the system call (see
# docs/linux-guest.md).
#
# linux-source-6.1 is fetched with `apt-get download` (nothing is installed on
# the host) and unpacked once into ${XDG_CACHE_HOME:-~/.cache}/tern-guest/
# linux-source-6.1_<version>/; the build lives beside it in
# small-kernel_<version>_<hash of the config fragment and patches>/ (an O=
# build). A re-run with the same package version and
# fragment only copies the results (about a second). The build takes minutes:
# TERN_KERNEL_JOBS sets make's -j (default: the number of CPUs).
set -euo pipefail
cd "$(dirname "$0")/.."

src_pkg=linux-source-6.1
fragment=scripts/small-kernel.config
out=build/guest/small
cache=${XDG_CACHE_HOME:-$HOME/.cache}/tern-guest
jobs=${TERN_KERNEL_JOBS:-$(nproc)}
mkdir -p "$out" "$cache"

say() { echo "make-small-kernel: $*" >&2; }

candidate() { apt-cache policy "$src_pkg" 2>/dev/null | awk '/Candidate:/ { print $2; exit }'; }
ver=$(candidate || true)
if [ -z "$ver" ] || [ "$ver" = "(none)" ]; then
  say "$src_pkg unknown to apt; running apt-get update"
  apt-get update -qq
  ver=$(candidate)
fi
[ -n "$ver" ] && [ "$ver" != "(none)" ] || { say "cannot resolve $src_pkg"; exit 1; }

patches=(scripts/small-kernel-patches/*.patch)
patch_hash=$(cat "${patches[@]}" | sha256sum | cut -c1-12)
frag_hash=$(cat "$fragment" "${patches[@]}" | sha256sum | cut -c1-12)
srcdir="$cache/${src_pkg}_${ver}"
objdir="$cache/small-kernel_${ver}_${frag_hash}"

install_outputs() {
  for f in vmlinux arch/x86/boot/bzImage .config; do
    local name=${f##*/}
    [ "$name" = .config ] && name=config
    if ! cmp -s "$objdir/$f" "$out/$name"; then cp "$objdir/$f" "$out/$name.tmp" && mv "$out/$name.tmp" "$out/$name"; fi
  done
  echo "$src_pkg $ver, fragment $frag_hash" > "$out/version"
}

if [ -f "$objdir/.done" ]; then
  install_outputs
  say "up to date: $out/vmlinux, $out/bzImage ($src_pkg $ver, fragment $frag_hash)"
  exit 0
fi

for tool in flex bison bc gcc make lz4 patch; do
  command -v "$tool" >/dev/null || { say "need $tool (scripts/setup.sh installs it)"; exit 1; }
done
[ -f /usr/include/gelf.h ] || { say "need libelf-dev (scripts/setup.sh installs it)"; exit 1; }

# The source tree, unpacked once per package version, with
# scripts/small-kernel-patches/ applied (unpacked again when they change).
if [ -f "$srcdir/.done" ] && [ "$(cat "$srcdir/.patches" 2>/dev/null)" != "$patch_hash" ]; then
  say "the patches changed; unpacking the source again"
  rm -f "$srcdir/.done"
fi
if [ ! -f "$srcdir/.done" ]; then
  say "fetching $src_pkg $ver"
  rm -rf "$srcdir"
  mkdir -p "$srcdir/dl"
  if ! (cd "$srcdir/dl" && apt-get -q -o APT::Sandbox::User=root download "$src_pkg=$ver" >/dev/null); then
    say "download failed; running apt-get update and retrying"
    apt-get update -qq
    (cd "$srcdir/dl" && apt-get -q -o APT::Sandbox::User=root download "$src_pkg=$ver" >/dev/null)
  fi
  dpkg -x "$srcdir"/dl/*.deb "$srcdir/pkg"
  tarball=$(ls "$srcdir"/pkg/usr/src/linux-source-*.tar.xz | head -n1)
  say "unpacking ${tarball##*/}"
  mkdir -p "$srcdir/tree"
  tar -xJf "$tarball" -C "$srcdir/tree" --strip-components=1
  rm -rf "$srcdir/dl" "$srcdir/pkg"
  for p in "${patches[@]}"; do
    say "applying ${p##*/}"
    patch -d "$srcdir/tree" -p1 --quiet --forward < "$p"
  done
  echo "$patch_hash" > "$srcdir/.patches"
  touch "$srcdir/.done"
fi
tree="$srcdir/tree"


# Configure: tinyconfig, the fragment merged over it, olddefconfig; then check
# that every option the fragment names came out as asked (a dependency that
# Kconfig refused would otherwise vanish silently).
rm -rf "$objdir"
mkdir -p "$objdir"
kmake() { make -C "$tree" O="$objdir" "$@"; }
say "configuring in $objdir"
kmake -s tinyconfig >/dev/null
(cd "$objdir" && "$tree/scripts/kconfig/merge_config.sh" -m -O "$objdir" .config "$OLDPWD/$fragment" >/dev/null)
kmake -s olddefconfig >/dev/null
bad=0
while IFS= read -r line; do
  case "$line" in
    CONFIG_*=*) want=$line; sym=${line%%=*} ;;
    "# CONFIG_"*" is not set") sym=${line#\# }; sym=${sym%% *}; want="# $sym is not set" ;;
    *) continue ;;
  esac
  got=$(grep -E "^($sym=|# $sym is not set)" "$objdir/.config" || true)
  if [ "$want" != "$got" ] && ! { [ -z "$got" ] && [ "${want#\#}" != "$want" ]; }; then
    say "config: asked for '$want', got '${got:-<absent>}'"
    bad=1
  fi
done < "$fragment"
[ "$bad" -eq 0 ] || { say "the fragment does not apply to $src_pkg $ver"; exit 1; }

say "building (make -j$jobs bzImage; minutes)"
start=$(date +%s)
if ! kmake -j"$jobs" bzImage > "$objdir/build.log" 2>&1; then
  tail -n 40 "$objdir/build.log" >&2
  say "build failed; log in $objdir/build.log"
  exit 1
fi
touch "$objdir/.done"
install_outputs
say "built $out/vmlinux and $out/bzImage in $(( $(date +%s) - start )) s ($src_pkg $ver, fragment $frag_hash)"

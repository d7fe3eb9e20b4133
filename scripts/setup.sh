#!/usr/bin/env bash
# Installs every Debian package that Tern's build, tests, guest image and
# benchmarks need. Idempotent: a second run only refreshes the package lists.
set -euo pipefail

packages=(
  build-essential g++ cmake ninja-build pkg-config git
  linux-libc-dev libseccomp-dev   # <linux/landlock.h>; the sandbox's seccomp filters
  zlib1g-dev libzstd-dev lz4
  libboost-dev nlohmann-json3-dev libcli11-dev
  libgtest-dev libgmock-dev
  qemu-utils qemu-system-x86 fio   # fio: bench/compare-qemu.sh, the host's raw limit
  curl acpica-tools bc
  help2man dpkg-dev   # man pages (cmake --install) and the .deb's Depends (dpkg-shlibdeps, cpack -G DEB)
  busybox-static cpio kmod zstd xz-utils mmdebstrap   # mmdebstrap: make-debian-root.sh
  flex bison bc libelf-dev libssl-dev patch e2fsprogs   # make-small-kernel.sh, ext4 images
  clang lld libclang-rt-14-dev clang-16 libclang-rt-16-dev
)

sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then sudo_cmd=(sudo); fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ "${#missing[@]}" -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get update
  "${sudo_cmd[@]}" apt-get install -y --no-install-recommends "${missing[@]}"
fi

#!/usr/bin/env bash
# Builds the demo/test Linux guest from Debian packages, without installing
# a kernel on the host:
#   build/guest/bzImage            Debian's cloud kernel (linux-image-cloud-amd64)
#   build/guest/vmlinux            the same kernel decompressed (ELF64)
#   build/guest/initramfs.cpio.gz  busybox-static (i386) + the virtio modules,
#                                  /init and the guest test scripts (/tests)
#   build/guest/initramfs64.cpio.gz  the same with a 64-bit busybox (amd64),
#                                  for a real KVM (scripts/lab.sh, hardware)
#   build/guest/small/initramfs.cpio  the same without the modules, uncompressed
#                                  (for the small kernel)
#   build/guest/small/{vmlinux,bzImage}  the small kernel (make-small-kernel.sh;
#                                  skipped with TERN_GUEST_SMALL_KERNEL=0)
# The kernel package is fetched with `apt-get download` and unpacked with
# `dpkg -x` into ${XDG_CACHE_HOME:-~/.cache}/tern-guest/<package>_<version>;
# re-running with the same package version and init script is cheap.
#
# The guest's /init (tests/linux/guest/init) mounts proc, sys and dev, loads
# the cloud kernel's virtio modules when it runs on that kernel, prints the
# disks and their sizes, runs the command given as `tern.run=CMD[,ARG...]` on
# the kernel command line (e.g. tern.run=/tests/rw.sh) and powers off (busybox
# poweroff -f: tern exits 0), or, when the command fails with status N, ends
# the VM through tern's exit device so that tern exits with 32 + N
# (docs/vmm.md, "Exit status").
# Without tern.run it mounts /dev/vda read-only if it holds a file system and
# lists it. `tern.shell` starts a shell on the console instead of powering off.
set -euo pipefail
cd "$(dirname "$0")/.."

out=build/guest
cache=${XDG_CACHE_HOME:-$HOME/.cache}/tern-guest
mkdir -p "$out" "$cache"

say() { echo "make-guest: $*" >&2; }

# Inside the lab (scripts/lab.sh) there is no apt: the guest carried in from
# the host is used as it is.
if [ "${TERN_GUEST_PREBUILT:-0}" = 1 ]; then
  for f in "$out/bzImage" "$out/vmlinux" "$out/initramfs.cpio.gz" "$out/initramfs64.cpio.gz"; do
    [ -f "$f" ] || { say "TERN_GUEST_PREBUILT=1 but $f is missing"; exit 1; }
  done
  say "prebuilt (TERN_GUEST_PREBUILT=1): $out"
  exit 0
fi

# Debian's cloud kernel package, unpacked into the cache (scripts/lib/cloud-kernel.sh).
. scripts/lib/cloud-kernel.sh
cloud_kernel_fetch
pkg=$kernel_pkg
kdir=$kernel_dir

vmlinuz=$(ls "$kdir"/root/boot/vmlinuz-* | head -n1)
kver=${vmlinuz##*/vmlinuz-}
if ! cmp -s "$vmlinuz" "$out/bzImage"; then cp "$vmlinuz" "$out/bzImage"; fi

# build/guest/vmlinux: the same kernel, already decompressed (an ELF64 that
# tern enters at its 64-bit entry). Under an emulated KVM the bzImage's own
# decompressor costs minutes; this skips it. The compressed payload sits at
# payload_offset/payload_length (setup header 0x248/0x24c, boot protocol
# 2.08+) after the (setup_sects + 1) * 512 bytes of real-mode code.
if [ ! -f "$kdir/vmlinux" ]; then
  read -r setup_sects payload_off payload_len < <(od -An -tu1 -j $((0x1f1)) -N1 "$vmlinuz" | tr -d ' \n'; echo -n ' ';
    od -An -tu4 -j $((0x248)) -N8 "$vmlinuz")
  [ "$setup_sects" -eq 0 ] && setup_sects=4
  start=$(( (setup_sects + 1) * 512 + payload_off ))
  payload="$kdir/payload"
  dd if="$vmlinuz" of="$payload" iflag=skip_bytes,count_bytes bs=1M skip="$start" count="$payload_len" status=none
  magic=$(od -An -tx1 -N4 "$payload" | tr -d ' ')
  # The kernel appends the decompressed size after the stream, which the
  # tools report as trailing garbage; the ELF is checked below instead.
  case "$magic" in
    02214c18) lz4 -dc "$payload" > "$kdir/vmlinux.tmp" 2>/dev/null || true ;;
    28b52ffd) zstd -qdc "$payload" > "$kdir/vmlinux.tmp" 2>/dev/null || true ;;
    fd377a58) xz -qdc "$payload" > "$kdir/vmlinux.tmp" 2>/dev/null || true ;;
    1f8b*) gzip -qdc "$payload" > "$kdir/vmlinux.tmp" 2>/dev/null || true ;;
    *) say "unknown kernel payload compression (magic $magic)"; exit 1 ;;
  esac
  rm -f "$payload"
  readelf -h "$kdir/vmlinux.tmp" 2>/dev/null | grep -q 'ELF64' || { say "could not extract vmlinux"; exit 1; }
  mv "$kdir/vmlinux.tmp" "$kdir/vmlinux"
fi
if ! cmp -s "$kdir/vmlinux" "$out/vmlinux"; then cp "$kdir/vmlinux" "$out/vmlinux"; fi

# busybox: Debian's busybox-static for i386, a static 32-bit binary. A 32-bit
# user space runs under every kernel with IA32_EMULATION (Debian's cloud
# kernel, the small kernel), and on an emulated PVM host (kvm_pvm) its system
# calls can go through `int $0x80`, where 64-bit SYSCALL from user mode
# fails (see docs/linux-guest.md). Fetched with `apt-get download` once i386
# is a foreign architecture of the host's dpkg (added here if missing; no
# i386 package is installed), unpacked into the cache.
if ! dpkg --print-foreign-architectures | grep -qx i386; then
  say "adding i386 as a foreign dpkg architecture (for busybox-static:i386's download)"
  dpkg --add-architecture i386
  apt-get update -qq
fi
bb_candidate() { apt-cache policy busybox-static:i386 2>/dev/null | awk '/Candidate:/ { print $2; exit }'; }
bb_ver=$(bb_candidate || true)
if [ -z "$bb_ver" ] || [ "$bb_ver" = "(none)" ]; then
  apt-get update -qq
  bb_ver=$(bb_candidate)
fi
[ -n "$bb_ver" ] && [ "$bb_ver" != "(none)" ] || { say "cannot resolve busybox-static:i386"; exit 1; }
bbdir="$cache/busybox-static_i386_${bb_ver//:/%3a}"
if [ ! -f "$bbdir/.done" ]; then
  say "fetching busybox-static:i386 $bb_ver"
  rm -rf "$bbdir"
  mkdir -p "$bbdir/dl"
  (cd "$bbdir/dl" && apt-get -q -o APT::Sandbox::User=root download "busybox-static:i386=$bb_ver" >/dev/null)
  dpkg -x "$bbdir"/dl/*.deb "$bbdir/root"
  cp "$bbdir/root/bin/busybox" "$bbdir/busybox"
  rm -rf "$bbdir/dl" "$bbdir/root"
  touch "$bbdir/.done"
fi
busybox="$bbdir/busybox"
readelf -h "$busybox" | grep -q 'Intel 80386' || { say "$busybox is not an i386 ELF"; exit 1; }
! readelf -l "$busybox" | grep -q 'program interpreter' || { say "$busybox is not static"; exit 1; }
# For the tests' ext4 root file systems.
if ! cmp -s "$busybox" "$out/busybox-i386"; then cp "$busybox" "$out/busybox-i386"; fi

# The initramfs, rebuilt when the kernel, busybox, init, the guest test
# scripts or this script change. Two user spaces, the same init and scripts:
#   initramfs.cpio.gz    32-bit busybox (i386): runs on every KVM, including
#                        this project's emulated CI host (int $0x80)
#   initramfs64.cpio.gz  64-bit busybox (the host's busybox-static, amd64):
#                        for a real KVM (scripts/lab.sh, hardware), where a
#                        64-bit user space runs
guest_src=tests/linux/guest
[ -x /bin/busybox ] || { say "need busybox-static on the host (scripts/setup.sh installs it)"; exit 1; }
stamp="$kver $(sha256sum "$0" scripts/lib/cloud-kernel.sh "$busybox" /bin/busybox "$guest_src"/* tests/linux/guest-tools/* | awk '{ print $1 }' | tr '\n' ' ')"

# stage_initramfs DIR BUSYBOX LABEL BITS: the archive's tree, without modules.
stage_initramfs() {
  local stage=$1
  mkdir -p "$stage"/{bin,dev,etc,proc,sys,mnt,tmp,tests}
  cp "$2" "$stage/bin/busybox"
  # outb: how /init reaches tern's exit device (freestanding, no libc).
  gcc -m"$4" -static -nostdlib -ffreestanding -fno-pic -no-pie -fno-stack-protector -mgeneral-regs-only \
    -Os -s -Wall -Wextra -Werror -o "$stage/bin/outb" tests/linux/guest-tools/outb.c
  # The applet links, made here rather than by `busybox --install` in the
  # guest (hundreds of system calls, slow under an emulated KVM). The host's
  # busybox-static is the same Debian version; it lists the applets.
  for applet in $(/bin/busybox --list); do
    [ "$applet" = busybox ] || ln -s busybox "$stage/bin/$applet"
  done
  echo "$3" > "$stage/etc/tern-busybox"
  cp "$guest_src/init" "$stage/init"
  for f in "$guest_src"/*.sh; do cp "$f" "$stage/tests/"; done   # (root-init goes on ext4 roots)
  chmod +x "$stage/init" "$stage"/tests/*.sh
}

# add_modules DIR: the cloud kernel's virtio modules, in an order where each
# module's dependencies come first (modinfo: virtio needs virtio_ring,
# virtio_pci needs the other four), then the ACPI power button's driver and
# evdev (its /dev/input/event*, which acpid reads), for /init to insmod when
# it runs on that kernel (the small kernel has the virtio ones built in).
add_modules() {
  local stage=$1 m
  mkdir -p "$stage/lib/modules/$kver"
  for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_mmio virtio_blk button evdev; do
    if ! cloud_kernel_module "$m" "$stage/lib/modules/$kver/$m.ko"; then
      if cloud_kernel_builtin "$m"; then say "$m is built into the kernel"; continue; fi
      say "module $m not found in $pkg"; exit 1
    fi
    echo "$m" >> "$stage/lib/modules/$kver/order"
  done
}

cpio_of() { (cd "$1" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0); }

if [ -f "$out/initramfs.cpio.gz" ] && [ -f "$out/initramfs64.cpio.gz" ] && [ -f "$out/small/initramfs.cpio" ] &&
   [ "$(cat "$out/.initramfs-stamp" 2>/dev/null)" = "$stamp" ]; then
  say "up to date: $out/bzImage ($kver), $out/initramfs.cpio.gz, $out/initramfs64.cpio.gz"
else
  stage=$(mktemp -d)
  trap 'rm -rf "$stage"' EXIT
  stage_initramfs "$stage/i386" "$busybox" "busybox-static:i386 $bb_ver" 32
  add_modules "$stage/i386"
  cpio_of "$stage/i386" | gzip -9 > "$out/initramfs.cpio.gz.tmp"
  mv "$out/initramfs.cpio.gz.tmp" "$out/initramfs.cpio.gz"
  # The small kernel's: no modules, and not compressed, since under an
  # emulated KVM the kernel's own gunzip of the archive takes minutes.
  rm -rf "$stage/i386/lib"
  mkdir -p "$out/small"
  cpio_of "$stage/i386" > "$out/small/initramfs.cpio.tmp"
  mv "$out/small/initramfs.cpio.tmp" "$out/small/initramfs.cpio"
  stage_initramfs "$stage/amd64" /bin/busybox "busybox-static:amd64 $(dpkg-query -W -f='${Version}' busybox-static)" 64
  add_modules "$stage/amd64"
  cpio_of "$stage/amd64" | gzip -9 > "$out/initramfs64.cpio.gz.tmp"
  mv "$out/initramfs64.cpio.gz.tmp" "$out/initramfs64.cpio.gz"
  echo "$stamp" > "$out/.initramfs-stamp"
  say "built $out/bzImage ($kver), $out/initramfs.cpio.gz, $out/initramfs64.cpio.gz and $out/small/initramfs.cpio"
fi

# The small kernel from Debian's linux-source (cached; minutes the first time).
if [ "${TERN_GUEST_SMALL_KERNEL:-1}" = 1 ]; then
  bash scripts/make-small-kernel.sh
fi

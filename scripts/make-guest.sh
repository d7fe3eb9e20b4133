#!/usr/bin/env bash
# Builds the demo/test Linux guest from Debian packages, without installing
# a kernel on the host:
#   build/guest/bzImage            Debian's cloud kernel (linux-image-cloud-amd64)
#   build/guest/vmlinux            the same kernel decompressed (ELF64)
#   build/guest/initramfs.cpio.gz  busybox-static + the virtio modules
# The kernel package is fetched with `apt-get download` and unpacked with
# `dpkg -x` into ${XDG_CACHE_HOME:-~/.cache}/tern-guest/<package>_<version>;
# re-running with the same package version and init script is cheap.
#
# The guest's /init mounts proc, sys and dev, loads virtio, virtio_ring,
# virtio_pci_modern_dev, virtio_pci_legacy_dev, virtio_pci and virtio_blk
# (those the kernel has not built in), reports /dev/vda on the console,
# mounts it if it holds a file system, and powers off (busybox poweroff -f)
# unless `tern.shell` is on the kernel command line, in which case it starts
# a shell on the console.
set -euo pipefail
cd "$(dirname "$0")/.."

out=build/guest
cache=${XDG_CACHE_HOME:-$HOME/.cache}/tern-guest
mkdir -p "$out" "$cache"

say() { echo "make-guest: $*" >&2; }

# The kernel package behind the metapackage, and its version.
kernel_package() {
  apt-cache depends linux-image-cloud-amd64 2>/dev/null |
    awk '/Depends: linux-image-[0-9]/ { print $2; exit }'
}
pkg=$(kernel_package || true)
if [ -z "$pkg" ]; then
  say "linux-image-cloud-amd64 unknown to apt; running apt-get update"
  apt-get update -qq
  pkg=$(kernel_package)
fi
[ -n "$pkg" ] || { say "cannot resolve linux-image-cloud-amd64"; exit 1; }
ver=$(apt-cache show --no-all-versions "$pkg" | awk '/^Version:/ { print $2; exit }')
[ -n "$ver" ] || { say "no version for $pkg"; exit 1; }
kdir="$cache/${pkg}_${ver}"

if [ ! -f "$kdir/.done" ]; then
  say "fetching $pkg $ver"
  rm -rf "$kdir"
  mkdir -p "$kdir/dl"
  if ! (cd "$kdir/dl" && apt-get -q -o APT::Sandbox::User=root download "$pkg=$ver" >/dev/null); then
    say "download failed; running apt-get update and retrying"
    apt-get update -qq
    (cd "$kdir/dl" && apt-get -q -o APT::Sandbox::User=root download "$pkg=$ver" >/dev/null)
  fi
  dpkg -x "$kdir"/dl/*.deb "$kdir/root"
  rm -rf "$kdir/dl"
  touch "$kdir/.done"
fi

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

# The initramfs, rebuilt when the kernel, busybox or this script changes.
# busybox-static's binary has no program interpreter (readelf -l shows none).
static_elf() { [ -x "$1" ] && ! readelf -l "$1" 2>/dev/null | grep -q 'program interpreter'; }
busybox=$(command -v busybox || true)
static_elf "${busybox:-/nonexistent}" || busybox=/bin/busybox
static_elf "$busybox" || { say "need busybox-static (scripts/setup.sh installs it)"; exit 1; }
stamp="$kver $(sha256sum "$0" "$busybox" | awk '{ print $1 }' | tr '\n' ' ')"
if [ -f "$out/initramfs.cpio.gz" ] && [ "$(cat "$out/.initramfs-stamp" 2>/dev/null)" = "$stamp" ]; then
  say "up to date: $out/bzImage ($kver), $out/initramfs.cpio.gz"
  exit 0
fi

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage"/{bin,dev,proc,sys,mnt,lib/modules}
cp "$busybox" "$stage/bin/busybox"
ln -s busybox "$stage/bin/sh"
moddir="$kdir/root/lib/modules/$kver"
modules="virtio virtio_ring virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_blk"
for m in $modules; do
  f=$(find "$moddir/kernel" \( -name "$m.ko" -o -name "$m.ko.xz" -o -name "$m.ko.zst" \) | head -n1)
  if [ -z "$f" ]; then
    if grep -q "/$m.ko\$" "$moddir/modules.builtin" 2>/dev/null; then
      say "$m is built into the kernel"
      continue
    fi
    say "module $m not found in $pkg"; exit 1
  fi
  case "$f" in
    *.xz) xz -dc "$f" > "$stage/lib/modules/$m.ko" ;;
    *.zst) zstd -qdc "$f" > "$stage/lib/modules/$m.ko" ;;
    *) cp "$f" "$stage/lib/modules/$m.ko" ;;
  esac
done

cat > "$stage/init" <<INIT
#!/bin/sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo "tern-guest: init running on \$(uname -r), \$(grep -c ^processor /proc/cpuinfo) CPU(s)"
for m in $modules; do
  [ -f /lib/modules/\$m.ko ] || continue
  if insmod /lib/modules/\$m.ko; then echo "tern-guest: loaded \$m"; else echo "tern-guest: FAILED to load \$m"; fi
done
n=0
while [ ! -b /dev/vda ] && [ \$n -lt 20 ]; do sleep 0.1; n=\$((n + 1)); done
if [ -b /dev/vda ]; then
  echo "tern-guest: /dev/vda present, \$(cat /sys/block/vda/size) sectors"
  if mount -o ro /dev/vda /mnt 2>/dev/null; then
    echo "tern-guest: mounted /dev/vda:"; ls /mnt; umount /mnt
  else
    echo "tern-guest: /dev/vda holds no file system; first bytes:"
    dd if=/dev/vda bs=16 count=1 2>/dev/null | hexdump -C | head -n1
  fi
else
  echo "tern-guest: no /dev/vda"
fi
if grep -q tern.shell /proc/cmdline; then
  echo "tern-guest: starting a shell (tern.shell)"
  exec setsid cttyhack sh
fi
echo "tern-guest: powering off"
poweroff -f
INIT
chmod +x "$stage/init"
(cd "$stage" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) | gzip -9 > "$out/initramfs.cpio.gz.tmp"
mv "$out/initramfs.cpio.gz.tmp" "$out/initramfs.cpio.gz"
echo "$stamp" > "$out/.initramfs-stamp"
say "built $out/bzImage ($kver) and $out/initramfs.cpio.gz"

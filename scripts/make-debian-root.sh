#!/usr/bin/env bash
# Builds a Debian 12 root disk for tern, from Debian's packages:
#   build/guest/debian/root.qcow2   whole-disk ext4 (no partition table), QCOW2
#   build/guest/debian/root.raw     the same file system, raw (sparse)
#   build/guest/debian/vmlinuz      the root's own kernel (linux-image-cloud-amd64)
#   build/guest/debian/initrd.img   and its initramfs-tools initrd
# Boot it with
#   build/tern --kernel build/guest/debian/vmlinuz --initramfs build/guest/debian/initrd.img \
#     --cmdline "console=ttyS0 root=/dev/vda rw" --cpus boot=2 --memory size=1G \
#     --disk path=root.qcow2,num_queues=2
# (docs/linux-guest.md, "A Debian root disk").
#
# mmdebstrap makes a minimal root file system (variant minbase: systemd as
# init, udev, dbus for logind's power button, util-linux, e2fsprogs, fio,
# the cloud kernel), without documentation or translations; mkfs.ext4 -d
# puts it into an ext4 file system a little larger than its contents (so a
# test that grows the disk can fill the old size quickly), and tern-img
# converts that to QCOW2. The root account has no password (a console
# login for experiments; the image has no network). The image carries
# tests/linux/debian/tern-test and its unit, which do nothing unless the
# kernel command line has tern.test=NAME (tests/linux/debian_test.cpp).
#
# Cached in ${XDG_CACHE_HOME:-~/.cache}/tern-guest/debian-<key>, the key
# being the candidate versions of the packages and the hash of this script
# and the files it copies in: a second run with the same inputs only copies.
# Needs root (mmdebstrap --mode=root) or unprivileged user namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."

out=build/guest/debian
cache=${XDG_CACHE_HOME:-$HOME/.cache}/tern-guest
say() { echo "make-debian-root: $*" >&2; }

# Inside the lab (scripts/lab.sh) there is no apt: the disk carried in from
# the host is used as it is.
if [ "${TERN_GUEST_PREBUILT:-0}" = 1 ]; then
  for f in root.qcow2 root.raw vmlinuz initrd.img; do
    [ -f "$out/$f" ] || { say "TERN_GUEST_PREBUILT=1 but $out/$f is missing"; exit 1; }
  done
  say "prebuilt (TERN_GUEST_PREBUILT=1): $out ($(cat "$out/summary" 2>/dev/null))"
  exit 0
fi

packages=(systemd-sysv udev dbus kmod util-linux e2fsprogs procps fio linux-image-cloud-amd64 initramfs-tools)
suite=bookworm
mirrors=("deb http://deb.debian.org/debian $suite main"
         "deb http://deb.debian.org/debian $suite-updates main"
         "deb http://deb.debian.org/debian-security $suite-security main")

command -v mmdebstrap > /dev/null || { say "mmdebstrap missing (scripts/setup.sh installs it)"; exit 1; }
tern_img=build/tern-img
[ -x "$tern_img" ] || { say "$tern_img missing: build first (scripts/build.sh)"; exit 1; }

# The key: what apt would install today (the host's lists name the same
# archive) and this script with its inputs.
versions() {
  local p
  for p in "${packages[@]}"; do
    printf '%s %s\n' "$p" "$(apt-cache policy "$p" 2>/dev/null | awk '/Candidate:/ { print $2; exit }')"
  done
  # The kernel package the meta-package points at.
  apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ { print $2; exit }'
}
if versions | grep -q -e ' $' -e '(none)'; then apt-get update -qq; fi
key=$( { versions; cat "$0" tests/linux/debian/*; } | sha256sum | cut -c1-16)
dir="$cache/debian-$key"

if [ ! -f "$dir/.done" ]; then
  say "building the Debian $suite root ($key); about two minutes"
  started=$SECONDS
  rm -rf "$dir"
  mkdir -p "$dir"
  rootfs="$dir/rootfs"
  mode=root; [ "$(id -u)" -eq 0 ] || mode=unshare
  mmdebstrap --mode=$mode --variant=minbase --quiet \
    --include="$(IFS=,; echo "${packages[*]}")" \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --customize-hook='echo tern-debian > "$1/etc/hostname"' \
    --customize-hook='echo "/dev/vda / ext4 rw,errors=remount-ro 0 1" > "$1/etc/fstab"' \
    --customize-hook='chroot "$1" passwd -d root' \
    --customize-hook="copy-in tests/linux/debian/tern-test /usr/local/sbin" \
    --customize-hook="copy-in tests/linux/debian/tern-test.service /etc/systemd/system" \
    --customize-hook='chmod 0755 "$1/usr/local/sbin/tern-test"' \
    --customize-hook='chroot "$1" systemctl enable tern-test.service' \
    --customize-hook='rm -rf "$1/var/cache/apt"/*.bin "$1/var/lib/apt/lists"/*_Packages' \
    "$suite" "$rootfs" "${mirrors[@]}"
  vmlinuz=$(ls "$rootfs"/boot/vmlinuz-* | head -n1)
  initrd=$(ls "$rootfs"/boot/initrd.img-* | head -n1)
  cp "$vmlinuz" "$dir/vmlinuz"
  cp "$initrd" "$dir/initrd.img"
  # The file system: its contents plus 25% and 128 MiB, in whole MiB.
  used=$(du -sm "$rootfs" | cut -f1)
  size=$(( used + used / 4 + 128 ))
  truncate -s "${size}M" "$dir/root.raw"
  mkfs.ext4 -q -F -L tern-root -d "$rootfs" -E root_owner=0:0 "$dir/root.raw"
  "$tern_img" convert -O qcow2 "$dir/root.raw" "$dir/root.qcow2"
  rm -rf "$rootfs"
  du -sm --apparent-size "$dir/root.raw" | awk '{ printf "size %s MiB", $1 }' > "$dir/summary"
  echo ", $(du -sm "$dir/root.qcow2" | cut -f1) MiB as QCOW2, built in $((SECONDS - started)) s from: $(versions | tr '\n' ' ')" >> "$dir/summary"
  touch "$dir/.done"
  say "built: $(cat "$dir/summary")"
fi

mkdir -p "$out"
for f in vmlinuz initrd.img root.raw root.qcow2; do
  if ! cmp -s "$dir/$f" "$out/$f"; then cp --sparse=always "$dir/$f" "$out/$f.tmp" && mv "$out/$f.tmp" "$out/$f"; fi
done
cp "$dir/summary" "$out/summary"
say "up to date: $out (root.qcow2, root.raw, vmlinuz, initrd.img: $(cat "$out/summary"))"

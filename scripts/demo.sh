#!/usr/bin/env bash
# The main job: set up the machine, build Tern and the demo guest, make a QCOW2
# disk with tern-img, and boot Debian's cloud kernel on it under tern.
#
# On a host with hardware KVM the guest reaches its busybox init, reports the
# disk and powers off. On a nested, software-emulated KVM (kvm_pvm) the kernel
# runs in KVM's instruction emulator and stops early; the demo detects that,
# says so, and bounds the boot instead of hanging.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
bash scripts/build.sh
bash scripts/make-guest.sh

work=$(mktemp -d /tmp/tern-demo.XXXXXX)
trap 'rm -rf "$work"' EXIT
disk="$work/disk.qcow2"

echo "== tern-img: create a 64 MiB QCOW2 disk and write a pattern"
build/tern-img create -f qcow2 "$disk" 64M
build/tern-img io "$disk" -c "write -P 0x5a 0 64k" -c "read -P 0x5a 0 64k"
build/tern-img info "$disk"

kvm_kind=hardware
if [ -d /sys/module/kvm_pvm ] || ! { [ -d /sys/module/kvm_intel ] || [ -d /sys/module/kvm_amd ]; }; then
  kvm_kind=emulated
fi

boot_args=(--kernel build/guest/bzImage --initramfs build/guest/initramfs.cpio.gz
           --cmdline "console=ttyS0 panic=-1"
           --cpus boot=2 --memory size=512M
           --disk "path=$disk,id=disk0" --serial tty)

echo "== tern: booting Debian's cloud kernel ($kvm_kind KVM)"
if [ "$kvm_kind" = hardware ]; then
  build/tern "${boot_args[@]}"
else
  cat <<'MSG'
This host's /dev/kvm is nested and software-emulated (kvm_pvm): the kernel runs
in KVM's instruction emulator at a few million instructions per second, and
instructions such as int3, xsave and cmpxchg16b are not emulated, so Debian's
kernel stops early (see README, "How far the Linux guest gets"). The demo boots
the same kernel already decompressed (build/guest/vmlinux; the bzImage's own
decompressor alone takes about two minutes here), hides xsave and cmpxchg16b
from it, and bounds the boot to 120 seconds.
MSG
  boot_args=(--kernel build/guest/vmlinux --initramfs build/guest/initramfs.cpio.gz
             --cmdline "console=ttyS0 panic=-1 noxsave clearcpuid=cx16"
             --cpus boot=2 --memory size=512M
             --disk "path=$disk,id=disk0" --serial tty)
  status=0
  timeout --foreground -s KILL 120 build/tern "${boot_args[@]}" || status=$?
  echo "== tern exited with status $status (3: the kernel hit an instruction the emulator lacks; 137: stopped by the demo's time bound)"
fi

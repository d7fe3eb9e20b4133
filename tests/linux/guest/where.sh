#!/bin/sh
# Says which bus /dev/vda came through: the sysfs path of its virtio
# device, e.g. /sys/devices/platform/LNRO0005:00/virtio0 for a virtio-mmio
# device that the DSDT described, or .../pci0000:00/0000:00:01.0/virtio0.
. /tests/lib.sh
cd /sys/block/vda/device || fail "no /sys/block/vda/device"
say "vda device $(pwd -P)"

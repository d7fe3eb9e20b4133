// The test guest under QEMU, entered through its PVH note (tests/guest/
// start.S): qemu-system-x86_64 -M q35 -accel kvm with virtio-blk-pci
// (modern only, MSI-X) on raw and qcow2 images, two queues. The guest's
// device checks pass there as under tern (its emulation-fallback checks are
// skipped: QEMU on an emulated KVM stops at the int3), which is what lets
// bench/guest-io.sh compare the two on the same guest.
#include "tests/integration/virtio_blk_guest.h"

namespace tern::it {
namespace {

// Boots the guest under QEMU; returns its serial output. Expects a clean
// ACPI power-off (exit status 0) and every check passed.
std::string boot_qemu(const std::string& disk, const std::string& format, const std::string& cmdline) {
  std::string cmd = "timeout 300 qemu-system-x86_64 -M q35,accel=kvm -smp 1 -m 128 -display none -monitor none"
                    " -no-reboot -serial stdio -kernel " + build_dir() + "/tests/guest/tern-test-guest -append '" +
                    cmdline + "' -drive file=" + disk + ",if=none,id=d0,format=" + format +
                    ",cache=none,aio=native -device virtio-blk-pci,drive=d0,disable-legacy=on,num-queues=2,serial=" +
                    kSerial;
  Shell r = sh(cmd);
  EXPECT_EQ(r.status, 0) << cmd << "\n" << r.out;
  EXPECT_EQ(r.out.find("not ok"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("done passed"), std::string::npos) << r.out;
  return r.out;
}

const std::string kWords = std::string("prepared no_cpu_checks expect_queues=2 reqs=64 serial=") + kSerial;

TEST_F(VirtioBlkGuest, QemuBootsTheGuestThroughPvhOnRaw) {
  std::string img = raw_image();
  boot_qemu(img, "raw", kWords);
  expect_guest_writes(read_file(img), true);
}

TEST_F(VirtioBlkGuest, QemuBootsTheGuestThroughPvhOnQcow2) {
  std::string img = qcow2_image();
  boot_qemu(img, "qcow2", kWords);
  Shell c = sh("qemu-img check " + img);
  EXPECT_EQ(c.status, 0) << c.out;
  Shell conv = sh("qemu-img convert -O raw " + img + " " + dir_ + "/back.raw");
  ASSERT_EQ(conv.status, 0) << conv.out;
  expect_guest_writes(read_file(dir_ + "/back.raw"), true);
}

}  // namespace
}  // namespace tern::it

// Debian 12 from a tern root disk (label `debian`): the image that
// scripts/make-debian-root.sh makes (systemd, udev, e2fsprogs, the cloud
// kernel and its initramfs-tools initrd; build/guest/debian/), booted with
// its own kernel and initrd and `root=/dev/vda rw`, 2 vCPUs, 1 GiB. The
// guest's half is tests/linux/debian/tern-test, which a systemd unit starts
// once the boot is over when the command line says tern.test=NAME; every
// assertion is on the guest's own lines (systemd's, the kernel's, the
// script's) and, afterwards, on the image as the host reads it.
//
// A real KVM only (hardware, or the lab: scripts/lab.sh): on this project's
// emulated CI host (kvm_pvm) a 64-bit user space cannot run (its SYSCALL
// faults), so these tests skip there, saying so; lab.debian runs them
// (`ctest -L lab-debian`).
#include <sys/stat.h>

#include <cstdint>
#include <string>
#include <vector>

#include "tests/linux/linux_guest.h"

namespace tern::linux_test {
namespace {

std::chrono::seconds limit() { return std::chrono::seconds(env_int("TERN_DEBIAN_TIMEOUT", 600)); }
std::string debian_dir() { return build_dir() + "/guest/debian"; }

constexpr uint64_t kGrowBy = 256ull << 20;

uint64_t virtual_size(const std::string& path) {
  Shell info = sh("qemu-img info --output=json " + path);
  size_t at = info.out.find("\"virtual-size\": ");
  return at == std::string::npos ? 0 : std::stoull(info.out.substr(at + 16));
}

// Bytes that `qemu-img map` reports as data: what the image holds.
uint64_t mapped_data(const std::string& path) {
  Shell map = sh("qemu-img map --output=json " + path);
  uint64_t data = 0;
  for (size_t at = map.out.find('{'); at != std::string::npos; at = map.out.find('{', at + 1)) {
    std::string entry = map.out.substr(at, map.out.find('}', at) - at);
    if (entry.find("\"data\": true") == std::string::npos) continue;
    size_t f = entry.find("\"length\": ");
    if (f != std::string::npos) data += std::stoull(entry.substr(f + 10));
  }
  return data;
}

class DebianGuest : public ::testing::Test {
 protected:
  void SetUp() override {
    TERN_REQUIRE_KVM();
    if (emulated_kvm()) {
      GTEST_SKIP() << "emulated KVM (kvm_pvm): Debian's 64-bit user space cannot run here; the lab (label lab) "
                      "runs these tests on a real KVM";
    }
    static bool built = false;
    if (!built) {
      Shell g = sh("bash " + source_dir() + "/scripts/make-debian-root.sh");
      ASSERT_EQ(g.status, 0) << "scripts/make-debian-root.sh failed:\n" << g.out;
      std::printf("%s", g.out.c_str());
      built = true;
    }
    tmp_ = std::make_unique<tern::test_support::TempDir>("tern-debian");
    dir_ = tmp_->path();
    sock_ = dir_ + "/api.sock";
  }
  void TearDown() override {
    if (::testing::Test::HasFailure() && tern_.running()) std::printf("%s\n", tern_.report().c_str());
    tern_.kill();
  }

  // A copy of the project's root disk that this test may change. (GNU cp
  // by its path: the lab's /bin/sh is busybox, whose own cp comes first and
  // knows no --sparse.)
  std::string copy_of(const std::string& name) {
    std::string path = dir_ + "/" + name;
    Shell cp = sh("/usr/bin/cp --sparse=always " + debian_dir() + "/" + name + " " + path);
    if (cp.status != 0) ADD_FAILURE() << "copying " << name << ": " << cp.out;
    return path;
  }

  // Boots the root disk's own kernel and initrd from `disk_arg` (id disk0)
  // with tern.test=`test`, and waits for systemd to finish the boot.
  void boot(const std::string& disk_arg, const std::string& test, const std::vector<std::string>& extra = {}) {
    std::vector<std::string> args{"--kernel",  debian_dir() + "/vmlinuz",
                                  "--initramfs", debian_dir() + "/initrd.img",
                                  "--cmdline", "console=ttyS0 root=/dev/vda rw panic=-1 tern.test=" + test,
                                  "--cpus",    "boot=2",
                                  "--memory",  "size=1G",
                                  "--disk",    "id=disk0," + disk_arg,
                                  "--api-socket", sock_,
                                  "--timeout", std::to_string(4 * limit().count())};
    args.insert(args.end(), extra.begin(), extra.end());
    tern_.start(args, dir_ + "/console-" + test + ".log", dir_ + "/tern-" + test + ".log");
    expect_line("multi-user.target");  // systemd's "Reached target" line (its unit name in color)
    // `running`, or the failed units named (the line after) for the report.
    expect_line("tern-test: system running");
  }

  void expect_line(const std::string& text) {
    EXPECT_TRUE(tern_.wait_for(text, limit())) << "missing: " << text << "\n" << tern_.report();
  }

  // Waits for tern's exit; prints the console; no kernel warning allowed.
  int finish() {
    int st = tern_.wait_exit(limit());
    std::string console = tern_.console();
    std::printf("--- console (%.1f s) ---\n%s\n--- tern ---\n%s\n", tern_.seconds(), console.c_str(),
                tern_.log().c_str());
    expect_clean_kernel_log(console, tern_.log());
    EXPECT_EQ(console.find("tern-test: FAILED"), std::string::npos) << "the guest's script failed";
    return st;
  }

  // e2fsck -fn: clean without replaying a journal (a clean shutdown).
  void expect_clean_ext4(const std::string& raw) {
    Shell fsck = sh("e2fsck -fn " + raw);
    EXPECT_EQ(fsck.status, 0) << fsck.out;
  }

  std::unique_ptr<tern::test_support::TempDir> tmp_;
  std::string dir_, sock_;
  TernRun tern_;
};

// The headline flow. First boot: systemd reaches multi-user.target with
// both vCPUs and two queues; the API grows the disk while Debian runs; the
// kernel logs the capacity change; resize2fs grows the mounted root; the
// guest writes a file larger than the old file system's free space (its
// last block past the old end) and powers off with systemctl (exit 0).
// The host: qemu-img check clean, the new virtual size. Second boot (a
// restart): the file reads back; the guest deletes it and runs fstrim,
// which gives the clusters back (qemu-img map shows less data); then
// vm.power-button and systemd-logind shut Debian down (exit 0), and the
// file system is clean without a journal replay.
TEST_F(DebianGuest, Qcow2RootGrowsOnlineKeepsItsDataTrimsAndPowersOffOnTheButton) {
  std::string disk = copy_of("root.qcow2");
  if (HasFailure()) return;
  const uint64_t before = virtual_size(disk);
  ASSERT_GT(before, 0u);
  const uint64_t sectors = before / 512, grown = before + kGrowBy;

  boot("path=" + disk + ",num_queues=2", "grow");
  expect_line("tern-test: cpus 2 queues 2 sectors " + std::to_string(sectors) + " root /dev/vda ext4");
  ASSERT_TRUE(tern_.wait_for("waiting for a resize from " + std::to_string(sectors) + " sectors", limit()))
      << tern_.report();
  Shell r = sh(build_dir() + "/tern-remote --api-socket " + sock_ + " resize-disk --disk disk0 --size " +
               std::to_string(grown));
  EXPECT_EQ(r.status, 0) << r.out;
  expect_line("vda: detected capacity change from " + std::to_string(sectors) + " to " + std::to_string(grown / 512));
  expect_line("tern-test: size now " + std::to_string(grown / 512) + " sectors");
  expect_line("EXT4-fs (vda): resized filesystem to " + std::to_string(grown / 4096));
  expect_line("past the old end");
  expect_line("tern-test: wrote");
  EXPECT_EQ(finish(), 0);
  expect_qcow2_check_clean(disk);
  EXPECT_EQ(virtual_size(disk), grown);
  const uint64_t data_full = mapped_data(disk);

  boot("path=" + disk + ",num_queues=2", "verify");
  expect_line("tern-test: file reads back");
  expect_line("trimmed");
  ASSERT_TRUE(tern_.wait_for("tern-test: waiting for the power button", limit())) << tern_.report();
  Shell button = sh(build_dir() + "/tern-remote --api-socket " + sock_ + " power-button");
  EXPECT_EQ(button.status, 0) << button.out;
  expect_line("poweroff.target");  // systemd's "Reached target" line
  EXPECT_EQ(finish(), 0);
  expect_qcow2_check_clean(disk);
  const uint64_t data_trimmed = mapped_data(disk);
  std::printf("qemu-img map: %llu MiB of data after the big file, %llu MiB after rm and fstrim\n",
              static_cast<unsigned long long>(data_full >> 20), static_cast<unsigned long long>(data_trimmed >> 20));
  // The file was larger than the old free space plus 32 MiB; most of it
  // must have gone back.
  EXPECT_LT(data_trimmed + (64ull << 20), data_full) << "fstrim freed nothing";
  std::string raw = dir_ + "/back.raw";
  Shell cv = sh("qemu-img convert -O raw " + disk + " " + raw);
  ASSERT_EQ(cv.status, 0) << cv.out;
  expect_clean_ext4(raw);
}

// The same Debian from the raw root disk; systemctl poweroff, exit 0.
TEST_F(DebianGuest, RawRootBootsAndPowersOff) {
  std::string disk = copy_of("root.raw");
  if (HasFailure()) return;
  boot("path=" + disk + ",image_type=raw,num_queues=2", "boot");
  expect_line("tern-test: cpus 2 queues 2 sectors");
  EXPECT_EQ(finish(), 0);
  expect_clean_ext4(disk);
}

// The root disk on virtio-mmio, found through ACPI alone (the stock
// kernel's virtio_mmio is a module, loaded by the initrd's udev for the
// DSDT's LNRO0005, so tern's command-line hint stays off), as a QCOW2
// overlay on the raw root (backing_files=on): the guest writes a file; the
// overlay holds it, the raw base is untouched (same checksum).
TEST_F(DebianGuest, MmioRootOnAnOverlayLeavesItsRawBaseUntouched) {
  std::string base = copy_of("root.raw");
  if (HasFailure()) return;
  ASSERT_EQ(::chmod(base.c_str(), 0444), 0);
  std::string sum_before = sh("sha256sum < " + base).out;
  std::string overlay = dir_ + "/overlay.qcow2";
  Shell c = sh(build_dir() + "/tern-img create -f qcow2 -b " + base + " -F raw " + overlay);
  ASSERT_EQ(c.status, 0) << c.out;
  boot("path=" + overlay + ",image_type=qcow2,backing_files=on,transport=mmio", "write",
       {"--virtio-mmio-cmdline", "off"});
  expect_line("tern-test: cpus 2 queues 1 sectors");
  expect_line("tern-test: wrote");
  EXPECT_EQ(finish(), 0);
  EXPECT_EQ(sh("sha256sum < " + base).out, sum_before) << "the base image changed";
  expect_qcow2_check_clean(overlay);
  EXPECT_GE(mapped_data(overlay), 16ull << 20);  // the file (and the journal's blocks) in the overlay
  std::string raw = dir_ + "/flat.raw";
  Shell cv = sh("qemu-img convert -O raw " + overlay + " " + raw);
  ASSERT_EQ(cv.status, 0) << cv.out;
  expect_clean_ext4(raw);
  Shell file = sh("debugfs -R 'stat /root/overlay-file' " + raw);
  EXPECT_NE(file.out.find("Size: 16777216"), std::string::npos) << file.out;
}

}  // namespace
}  // namespace tern::linux_test

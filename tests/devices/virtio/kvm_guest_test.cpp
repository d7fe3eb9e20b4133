// The test guest against the virtio-blk device under real KVM (MiniVm), with
// an in-memory disk: checks the guest's verdicts and what it left on disk.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>

#include "block/open.h"

#include "tests/devices/virtio/fakes.h"
#include "tests/devices/virtio/mini_vm.h"
#include "tests/support/support.h"

namespace tern::devices {
namespace {

using testing::MemDisk;
using tern::test_support::sh;

constexpr uint64_t kDisk = 64ull << 20;

std::string guest_path() { return tern::test_support::build_path("tests/guest/tern-test-guest"); }

// Every 512-byte sector N holds 64 words N*64+k: word w of the disk is w.
void fill_pattern(std::vector<uint8_t>& d) {
  auto* w = reinterpret_cast<uint64_t*>(d.data());
  for (uint64_t i = 0; i < d.size() / 8; ++i) w[i] = i;
}
uint64_t word(const std::vector<uint8_t>& d, uint64_t sector, uint64_t k) {
  uint64_t v;
  std::memcpy(&v, d.data() + sector * 512 + k * 8, 8);
  return v;
}

class KvmGuest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Where /dev/kvm exists this test runs; it may skip only where it is absent.
    TERN_REQUIRE_KVM();
  }
  testing::MiniVmResult boot(VirtioBlkOptions opts, const std::string& cmdline,
                             std::function<bool(std::string_view)> on_line = {}) {
    auto disk = std::make_unique<MemDisk>(kDisk);
    fill_pattern(disk->bytes());
    disk_ = disk.get();
    auto blk = std::make_unique<VirtioBlk>(std::move(disk), opts);
    blk_ = blk.get();
    std::string full = cmdline;
    // The guest sees no CPUID here (mini_vm.cpp), so it is told when the CPU
    // that runs it is QEMU's TCG (the lab), which it cannot read itself.
    if (tern::test_support::host_cpu_is_qemu_tcg()) full += " tcg";
    // For measurements only: TERN_GUEST_REQS=N sets the throughput run's size.
    if (const char* n = std::getenv("TERN_GUEST_REQS"); n && full.find("reqs=") == std::string::npos) {
      full += std::string(" reqs=") + n;
    }
    auto t0 = std::chrono::steady_clock::now();
    auto r = testing::run_mini_vm(
        {.kernel = guest_path(), .cmdline = full, .on_line = std::move(on_line)}, std::move(blk));
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("%s[guest wall time %.2f s]\n", r.serial.c_str(), s);
    EXPECT_EQ(r.error, "");
    EXPECT_EQ(r.serial.find("not ok"), std::string::npos);
    return r;
  }
  MemDisk* disk_ = nullptr;  // owned by the VM's device while it runs
  VirtioBlk* blk_ = nullptr;
};

VirtioBlkOptions opts(uint16_t queues, bool ro = false) {
  return {.read_only = ro, .num_queues = queues, .queue_size = 128, .serial = "tern-serial-1", .id = "d"};
}

TEST_F(KvmGuest, OneQueue) {
  auto r = boot(opts(1), "prepared serial=tern-serial-1 expect_queues=1");
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.serial.find("done passed"), std::string::npos);
}

TEST_F(KvmGuest, TwoQueuesAndWhatTheGuestWrote) {
  // The disk outlives the VM only inside the device, so check it from the
  // guest's own read-back plus the line protocol; the MemDisk contents are
  // checked through a resize-free idle stop while the device still exists.
  std::vector<uint8_t> snapshot;
  auto r = boot(opts(2), "prepared serial=tern-serial-1 expect_queues=2 idle", [&](std::string_view line) {
    if (line != "idle\n") return false;
    snapshot = disk_->bytes();  // the guest is idle: no I/O in flight
    return true;
  });
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.serial.find("queue 1 completes on its own MSI-X vector"), std::string::npos);
  ASSERT_EQ(snapshot.size(), kDisk);
  for (uint64_t s : {64u, 71u, 96u, 103u}) {
    for (uint64_t k : {0u, 63u}) EXPECT_EQ(word(snapshot, s, k), ~(s * 64 + k)) << s;
  }
  for (uint64_t s = 136; s < 144; ++s) EXPECT_EQ(word(snapshot, s, 5), 0u);
  EXPECT_EQ(word(snapshot, 72, 0), 72u * 64);
}

TEST_F(KvmGuest, ReadOnly) {
  auto r = boot(opts(1, true), "prepared serial=tern-serial-1 expect_ro");
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.serial.find("write refused with IOERR on read-only disk"), std::string::npos);
}

TEST_F(KvmGuest, HostileChainsNeedResetAndRecover) {
  auto r = boot(opts(1), "prepared serial=tern-serial-1 hostile reqs=16");
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.serial.find("oversized indirect chain -> NEEDS_RESET"), std::string::npos);
  EXPECT_NE(r.serial.find("indirect table longer than the queue -> NEEDS_RESET"), std::string::npos)
      << r.serial;
}

TEST_F(KvmGuest, ResizeRaisesConfigInterruptSeenByTheGuest) {
  bool resized = false;
  auto r = boot(opts(1), "prepared serial=tern-serial-1 idle reqs=16", [&](std::string_view line) {
    if (line == "idle\n") {
      resized = blk_->resize(2 * kDisk).has_value();
      return !resized;
    }
    return line.find("write and read past the old end") != std::string_view::npos;
  });
  EXPECT_TRUE(resized);
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.serial.find("capacity " + std::to_string(2 * kDisk / 512)), std::string::npos);
  EXPECT_NE(r.serial.find("ok "), std::string::npos);
}

// A fresh qcow2 image from qemu-img behind the real qcow2 engine: the guest
// writes its own pattern, and afterwards qemu-img finds the image clean and
// reads back what the guest wrote.
TEST_F(KvmGuest, FreshQcow2ImageWithTwoQueues) {
  tern::test_support::TempDir dir("tern-virtio");
  std::string img = dir.file("d.qcow2"), raw = dir.file("d.raw");
  std::string out;
  ASSERT_EQ(sh("qemu-img create -f qcow2 " + img + " 64M", &out), 0) << out;
  {
    auto disk = block::open_disk({.path = img});
    ASSERT_TRUE(disk.has_value()) << disk.error().message();
    auto blk = std::make_unique<VirtioBlk>(std::move(*disk), opts(2));
    auto t0 = std::chrono::steady_clock::now();
    // (Told about QEMU's TCG as boot() tells it: the guest sees no CPUID here.)
    std::string cmdline = std::string("serial=tern-serial-1") + (tern::test_support::host_cpu_is_qemu_tcg() ? " tcg" : "");
    auto r = testing::run_mini_vm({.kernel = guest_path(), .cmdline = cmdline, .on_line = {}}, std::move(blk));
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("%s[guest wall time %.2f s]\n", r.serial.c_str(), s);
    EXPECT_EQ(r.error, "");
    EXPECT_EQ(r.exit_code, 0);
    EXPECT_EQ(r.serial.find("not ok"), std::string::npos);
  }
  EXPECT_EQ(sh("qemu-img check " + img, &out), 0) << out;
  ASSERT_EQ(sh("qemu-img convert -O raw " + img + " " + raw, &out), 0) << out;
  std::ifstream f(raw, std::ios::binary);
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(f)), {});
  ASSERT_EQ(bytes.size(), kDisk);
  EXPECT_EQ(word(bytes, 0, 1), 1u);
  EXPECT_EQ(word(bytes, 300, 7), 300u * 64 + 7);
  EXPECT_EQ(word(bytes, 64, 3), ~uint64_t{64 * 64 + 3});
  EXPECT_EQ(word(bytes, 100, 0), ~uint64_t{100 * 64});
  EXPECT_EQ(word(bytes, 140, 2), 0u);
}

}  // namespace
}  // namespace tern::devices

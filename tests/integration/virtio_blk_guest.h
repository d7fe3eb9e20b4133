// Shared by the virtio-blk integration tests. End to end: build/tern boots the freestanding test guest
// (build/tests/guest/tern-test-guest) with a virtio-blk disk on each backend
// (raw sync, raw native AIO with and without O_DIRECT, qcow2), 1 and 2
// queues, read-only and hostile mode. The guest's verdict lines are checked,
// then the image on the host: the bytes the guest wrote, and `qemu-img check`
// for qcow2. Where /dev/kvm exists these tests run; they never skip there.
//
// Each test prints "[virtio-blk <case>: wall X s, N requests, R req/s]" for
// the record (emulator-bound figures; never asserted).
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "tests/support/support.h"

namespace tern::it {

inline constexpr uint64_t kDisk = 64ull << 20;

using tern::test_support::build_dir;
using tern::test_support::sh;
using tern::test_support::Shell;

// Every 512-byte sector N holds 64 little-endian words N*64+k.
inline std::vector<uint8_t> pattern_image() {
  std::vector<uint8_t> d(kDisk);
  auto* w = reinterpret_cast<uint64_t*>(d.data());
  for (uint64_t i = 0; i < kDisk / 8; ++i) w[i] = i;
  return d;
}
inline uint64_t word(const std::vector<uint8_t>& d, uint64_t sector, uint64_t k) {
  uint64_t v;
  std::memcpy(&v, d.data() + sector * 512 + k * 8, 8);
  return v;
}
inline std::vector<uint8_t> read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(f)), {});
}
inline void write_file(const std::string& path, const std::vector<uint8_t>& d) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(d.data()), static_cast<std::streamsize>(d.size()));
}

class VirtioBlkGuest : public ::testing::Test {
 protected:
  void SetUp() override {
    TERN_REQUIRE_KVM();
    tmp_ = std::make_unique<tern::test_support::TempDir>("tern-virtio-it");
    dir_ = tmp_->path();
  }

  std::string raw_image() {
    std::string p = dir_ + "/disk.raw";
    write_file(p, pattern_image());
    return p;
  }
  std::string qcow2_image() {
    std::string raw = raw_image(), p = dir_ + "/disk.qcow2";
    Shell r = sh("qemu-img convert -f raw -O qcow2 " + raw + " " + p);
    EXPECT_EQ(r.status, 0) << r.out;
    return p;
  }

  // Boots the guest; returns its serial output. Expects exit status 0.
  std::string boot(const std::string& what, const std::string& disk, const std::string& cmdline,
                   int expect_status = 0) {
    std::string cmd = "timeout 300 " + build_dir() + "/tern --kernel " + build_dir() +
                      "/tests/guest/tern-test-guest --memory size=128M --disk " + disk;
    std::string full = cmdline;
    // For measurements only: TERN_GUEST_REQS=N sets the throughput run's size.
    if (const char* n = std::getenv("TERN_GUEST_REQS"); n && full.find("reqs=") == std::string::npos) {
      full += std::string(full.empty() ? "" : " ") + "reqs=" + n;
    }
    if (!full.empty()) cmd += " --cmdline '" + full + "'";
    auto t0 = std::chrono::steady_clock::now();
    Shell r = sh(cmd);
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    EXPECT_EQ(r.status, expect_status) << cmd << "\n" << r.out;
    EXPECT_EQ(r.out.find("not ok"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("done passed"), std::string::npos) << r.out;
    if (::access("/sys/module/kvm_pvm", F_OK) == 0) {
      // An emulating KVM gives up on the guest's int3, stac/clac, fwait and
      // ldmxcsr (guest.c cpu_checks): tern completed and counted them.
      EXPECT_NE(r.out.find("instructions completed for KVM's emulator: int3 1, "), std::string::npos) << r.out;
    }
    uint64_t requests = 0;
    if (size_t at = r.out.find("total "); at != std::string::npos) {
      requests = std::strtoull(r.out.c_str() + at + 6, nullptr, 10);
    }
    std::printf("[virtio-blk %s: wall %.2f s, %llu requests, %.0f req/s]\n", what.c_str(), s,
                static_cast<unsigned long long>(requests), s > 0 ? requests / s : 0.0);
    return r.out;
  }

  // What the guest leaves behind on a writable disk (guest.c io_checks).
  static void expect_guest_writes(const std::vector<uint8_t>& d, bool two_queues) {
    ASSERT_GE(d.size(), kDisk);
    for (uint64_t s : {64u, 71u}) EXPECT_EQ(word(d, s, 9), ~(s * 64 + 9)) << "sector " << s;
    if (two_queues) {
      for (uint64_t s : {96u, 103u}) EXPECT_EQ(word(d, s, 1), ~(s * 64 + 1)) << "sector " << s;
    }
    for (uint64_t s = 136; s < 144; ++s) EXPECT_EQ(word(d, s, 3), 0u) << "sector " << s;
    EXPECT_EQ(word(d, 72, 0), 72u * 64);
    EXPECT_EQ(word(d, 300, 5), 300u * 64 + 5);
    EXPECT_EQ(word(d, 100000, 0), 100000u * 64);
  }

  std::unique_ptr<tern::test_support::TempDir> tmp_;
  std::string dir_;
};

inline const char* kSerial = "tern-it-serial";

}  // namespace tern::it

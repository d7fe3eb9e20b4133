// End to end: build/tern boots the freestanding test guest
// (build/tests/guest/tern-test-guest) with a virtio-blk disk on each backend
// (raw sync, raw native AIO with and without O_DIRECT, qcow2), 1 and 2
// queues, read-only and hostile mode. The guest's verdict lines are checked,
// then the image on the host: the bytes the guest wrote, and `qemu-img check`
// for qcow2. Where /dev/kvm exists these tests run; they never skip there.
//
// Each test prints "[virtio-blk <case>: wall X s, N requests, R req/s]" for
// the record (emulator-bound figures; never asserted).
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

namespace {

constexpr uint64_t kDisk = 64ull << 20;

std::string build_dir() {
  const char* b = std::getenv("TERN_BUILD_DIR");
  return b ? b : "build";
}

struct Shell {
  int status = -1;
  std::string out;
};
Shell sh(const std::string& cmd) {
  Shell r;
  FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  int st = ::pclose(p);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  return r;
}

// Every 512-byte sector N holds 64 little-endian words N*64+k.
std::vector<uint8_t> pattern_image() {
  std::vector<uint8_t> d(kDisk);
  auto* w = reinterpret_cast<uint64_t*>(d.data());
  for (uint64_t i = 0; i < kDisk / 8; ++i) w[i] = i;
  return d;
}
uint64_t word(const std::vector<uint8_t>& d, uint64_t sector, uint64_t k) {
  uint64_t v;
  std::memcpy(&v, d.data() + sector * 512 + k * 8, 8);
  return v;
}
std::vector<uint8_t> read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(f)), {});
}
void write_file(const std::string& path, const std::vector<uint8_t>& d) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(d.data()), static_cast<std::streamsize>(d.size()));
}

class VirtioBlkGuest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::access("/dev/kvm", F_OK) != 0) GTEST_SKIP() << "/dev/kvm absent";
    char tmpl[] = "/tmp/tern-virtio-it-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    if (!dir_.empty()) sh("rm -rf " + dir_);
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
    if (!cmdline.empty()) cmd += " --cmdline '" + cmdline + "'";
    auto t0 = std::chrono::steady_clock::now();
    Shell r = sh(cmd);
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    EXPECT_EQ(r.status, expect_status) << cmd << "\n" << r.out;
    EXPECT_EQ(r.out.find("not ok"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("done passed"), std::string::npos) << r.out;
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

  std::string dir_;
};

const char* kSerial = "tern-it-serial";

TEST_F(VirtioBlkGuest, RawSyncOneQueue) {
  std::string img = raw_image();
  boot("raw aio=sync 1 queue", "path=" + img + ",image_type=raw,aio=sync,serial=" + kSerial,
       std::string("prepared expect_queues=1 serial=") + kSerial);
  expect_guest_writes(read_file(img), false);
}

TEST_F(VirtioBlkGuest, RawSyncTwoQueues) {
  std::string img = raw_image();
  boot("raw aio=sync 2 queues",
       "path=" + img + ",image_type=raw,aio=sync,num_queues=2,serial=" + kSerial,
       std::string("prepared expect_queues=2 serial=") + kSerial);
  expect_guest_writes(read_file(img), true);
}

TEST_F(VirtioBlkGuest, RawAsyncOneQueue) {
  std::string img = raw_image();
  boot("raw_async direct=off 1 queue", "path=" + img + ",image_type=raw,aio=native,serial=" + kSerial,
       std::string("prepared expect_queues=1 serial=") + kSerial);
  expect_guest_writes(read_file(img), false);
}

TEST_F(VirtioBlkGuest, RawAsyncTwoQueues) {
  std::string img = raw_image();
  boot("raw_async direct=off 2 queues",
       "path=" + img + ",image_type=raw,aio=native,num_queues=2,serial=" + kSerial,
       std::string("prepared expect_queues=2 serial=") + kSerial);
  expect_guest_writes(read_file(img), true);
}

TEST_F(VirtioBlkGuest, RawAsyncDirectTwoQueues) {
  std::string img = raw_image();
  boot("raw_async direct=on 2 queues",
       "path=" + img + ",image_type=raw,aio=native,direct=on,num_queues=2,serial=" + kSerial,
       std::string("prepared expect_queues=2 serial=") + kSerial);
  expect_guest_writes(read_file(img), true);
}

TEST_F(VirtioBlkGuest, RawAsyncDirectOneQueue) {
  std::string img = raw_image();
  boot("raw_async direct=on 1 queue",
       "path=" + img + ",image_type=raw,aio=native,direct=on,serial=" + kSerial,
       std::string("prepared expect_queues=1 serial=") + kSerial);
  expect_guest_writes(read_file(img), false);
}

TEST_F(VirtioBlkGuest, Qcow2OneQueue) {
  std::string img = qcow2_image();
  boot("qcow2 1 queue", "path=" + img + ",image_type=qcow2,serial=" + kSerial,
       std::string("prepared expect_queues=1 serial=") + kSerial);
  Shell c = sh("qemu-img check " + img);
  EXPECT_EQ(c.status, 0) << c.out;
  Shell conv = sh("qemu-img convert -O raw " + img + " " + dir_ + "/back.raw");
  ASSERT_EQ(conv.status, 0) << conv.out;
  expect_guest_writes(read_file(dir_ + "/back.raw"), false);
}

TEST_F(VirtioBlkGuest, Qcow2TwoQueues) {
  std::string img = qcow2_image();
  boot("qcow2 2 queues", "path=" + img + ",num_queues=2,serial=" + kSerial,
       std::string("prepared expect_queues=2 serial=") + kSerial);
  Shell c = sh("qemu-img check " + img);
  EXPECT_EQ(c.status, 0) << c.out;
  Shell conv = sh("qemu-img convert -O raw " + img + " " + dir_ + "/back.raw");
  ASSERT_EQ(conv.status, 0) << conv.out;
  expect_guest_writes(read_file(dir_ + "/back.raw"), true);
}

// The command line of the issue: a fresh 64 MiB qcow2 from qemu-img, no
// guest command line (the guest writes its own pattern first).
TEST_F(VirtioBlkGuest, FreshQcow2WithoutCommandLine) {
  std::string img = dir_ + "/fresh.qcow2";
  Shell c = sh("qemu-img create -f qcow2 " + img + " 64M");
  ASSERT_EQ(c.status, 0) << c.out;
  boot("fresh qcow2 1 queue", "path=" + img, "");
  c = sh("qemu-img check " + img);
  EXPECT_EQ(c.status, 0) << c.out;
}

TEST_F(VirtioBlkGuest, ReadOnlyRaw) {
  std::string img = raw_image();
  std::string out = boot("raw read-only", "path=" + img + ",readonly=on,serial=" + kSerial,
                         std::string("prepared expect_ro serial=") + kSerial);
  EXPECT_NE(out.find("write refused with IOERR on read-only disk"), std::string::npos);
  EXPECT_EQ(read_file(img), pattern_image());  // untouched
}

TEST_F(VirtioBlkGuest, ReadOnlyQcow2) {
  std::string img = qcow2_image();
  std::string out = boot("qcow2 read-only", "path=" + img + ",readonly=on,serial=" + kSerial,
                         std::string("prepared expect_ro serial=") + kSerial);
  EXPECT_NE(out.find("write refused with IOERR on read-only disk"), std::string::npos);
  Shell c = sh("qemu-img check " + img);
  EXPECT_EQ(c.status, 0) << c.out;
}

TEST_F(VirtioBlkGuest, HostileChainsOnRaw) {
  std::string img = raw_image();
  std::string out = boot("raw hostile", "path=" + img + ",aio=native,serial=" + kSerial,
                         std::string("prepared hostile reqs=16 serial=") + kSerial);
  for (const char* kind : {"buffer outside RAM", "descriptor loop", "bad indirect length",
                           "nested indirect", "avail idx jump", "oversized indirect chain"}) {
    EXPECT_NE(out.find(std::string(kind) + " -> NEEDS_RESET"), std::string::npos) << kind;
  }
}

}  // namespace

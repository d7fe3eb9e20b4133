#include "devices/virtio/blk/device.h"

#include <gtest/gtest.h>

#include "tests/devices/virtio/fakes.h"

namespace tern::devices {
namespace {

using testing::DriverQueue;
using testing::FakeInterrupt;
using testing::MemDisk;
using testing::TestRam;
using testing::wait_for;

constexpr uint64_t kRam = 4 << 20;
constexpr uint16_t kSize = 32;  // room for every chain a test has in flight
constexpr uint64_t kDiskBytes = 64 * 512;
constexpr uint64_t kHdr = 0x100000, kData = 0x200000, kStatus = 0x300000;

struct BlkFixture : ::testing::Test {
  TestRam ram{kRam};
  DriverQueue driver{ram, kSize, 0x1000};
  MemDisk* disk = nullptr;
  std::unique_ptr<VirtioBlk> blk;
  FakeInterrupt irq;
  EventFd notify = *EventFd::create();
  uint64_t features = kVirtioFVersion1 | kVirtioFRingIndirectDesc | kVirtioFRingEventIdx;
  uint16_t next_req = 0;

  void make(VirtioBlkOptions opts = {},
            block::Capabilities caps = {.read_only = false, .discard = true, .write_zeroes = true}) {
    auto d = std::make_unique<MemDisk>(kDiskBytes, caps);
    disk = d.get();
    for (size_t i = 0; i < kDiskBytes; ++i) disk->bytes()[i] = static_cast<uint8_t>(i / 512 + 1);
    opts.queue_size = kSize;
    blk = std::make_unique<VirtioBlk>(std::move(d), opts);
  }
  void start() {
    blk->activate(ram.memory(), features | blk->device_features(),
                  {ActiveQueue{0, driver.config(), notify.fd()}}, irq);
  }
  void TearDown() override {
    if (blk) blk->reset();
  }

  // Sends one request; returns its index (its header/status slots).
  uint16_t send(uint32_t type, uint64_t sector, uint32_t data_len, bool data_writable,
                std::vector<uint8_t> extra_in = {}) {
    uint16_t n = next_req++;
    uint64_t hdr = kHdr + 64u * n, status = kStatus + n, data = kData + 0x10000u * n;
    ram.put<uint32_t>(hdr, type);
    ram.put<uint32_t>(hdr + 4, 0);
    ram.put<uint64_t>(hdr + 8, sector);
    ram.put<uint8_t>(status, 0xee);
    std::vector<DriverQueue::Buf> bufs{{hdr, 16, false}};
    if (!extra_in.empty()) {
      std::memcpy(ram.at(hdr + 16), extra_in.data(), extra_in.size());
      bufs.push_back({hdr + 16, static_cast<uint32_t>(extra_in.size()), false});
    }
    if (data_len) bufs.push_back({data, data_len, data_writable});
    bufs.push_back({status, 1, true});
    driver.add_chain(bufs);
    notify.signal();
    return n;
  }
  uint8_t status_of(uint16_t n) { return ram.get<uint8_t>(kStatus + n); }
  uint8_t* data_of(uint16_t n) { return ram.at(kData + 0x10000u * n); }
  bool wait_used(uint16_t count) {
    return wait_for([&] { return driver.used_idx() >= count; });
  }
  static std::vector<uint8_t> segment(uint64_t sector, uint32_t num, uint32_t flags) {
    std::vector<uint8_t> s(16);
    std::memcpy(s.data(), &sector, 8);
    std::memcpy(s.data() + 8, &num, 4);
    std::memcpy(s.data() + 12, &flags, 4);
    return s;
  }
};

TEST_F(BlkFixture, FeaturesAndConfigSpace) {
  make({.read_only = false, .num_queues = 2, .queue_size = kSize, .serial = "x", .id = "d"});
  uint64_t f = blk->device_features();
  for (uint64_t bit : {kVirtioFVersion1, kVirtioFRingIndirectDesc, kVirtioFRingEventIdx,
                       kBlkFBlkSize, kBlkFSegMax, kBlkFFlush, kBlkFMq, kBlkFDiscard,
                       kBlkFWriteZeroes}) {
    EXPECT_TRUE(f & bit) << bit;
  }
  EXPECT_FALSE(f & kBlkFRo);
  uint8_t cfg[kBlkConfigSize];
  blk->read_config(0, cfg);
  uint64_t capacity;
  std::memcpy(&capacity, cfg, 8);
  EXPECT_EQ(capacity, kDiskBytes / 512);
  uint16_t nq;
  std::memcpy(&nq, cfg + 34, 2);
  EXPECT_EQ(nq, 2);
  uint32_t blk_size, seg_max;
  std::memcpy(&blk_size, cfg + 20, 4);
  std::memcpy(&seg_max, cfg + 12, 4);
  EXPECT_EQ(blk_size, 512u);
  EXPECT_EQ(seg_max, kSize - 2u);
}

TEST_F(BlkFixture, NoDiscardFeaturesWithoutBackendSupport) {
  make({}, {.read_only = false, .discard = false, .write_zeroes = false});
  EXPECT_FALSE(blk->device_features() & kBlkFDiscard);
  EXPECT_FALSE(blk->device_features() & kBlkFWriteZeroes);
  start();
  uint16_t r = send(kBlkTDiscard, 0, 0, false, segment(0, 1, 0));
  ASSERT_TRUE(wait_used(1));
  EXPECT_EQ(status_of(r), kBlkSUnsupp);
}

TEST_F(BlkFixture, ReadWriteFlushGetId) {
  make({.read_only = false, .num_queues = 1, .queue_size = kSize,
        .serial = "serial-number-longer-than-20", .id = "d"});
  start();
  uint16_t rd = send(kBlkTIn, 3, 1024, true);
  ASSERT_TRUE(wait_used(1));
  EXPECT_EQ(status_of(rd), kBlkSOk);
  EXPECT_EQ(data_of(rd)[0], 4);
  EXPECT_EQ(data_of(rd)[1023], 5);
  EXPECT_EQ(driver.used_elem(0).second, 1025u);

  uint16_t wr = next_req;
  std::memset(data_of(wr), 0xab, 512);
  send(kBlkTOut, 10, 512, false);
  ASSERT_TRUE(wait_used(2));
  EXPECT_EQ(status_of(wr), kBlkSOk);

  uint16_t fl = send(kBlkTFlush, 0, 0, false);
  uint16_t id = send(kBlkTGetId, 0, 20, true);
  ASSERT_TRUE(wait_used(4));
  EXPECT_EQ(status_of(fl), kBlkSOk);
  EXPECT_EQ(status_of(id), kBlkSOk);
  EXPECT_EQ(std::string(reinterpret_cast<char*>(data_of(id)), 20), "serial-number-longer");
  blk->reset();
  EXPECT_EQ(disk->bytes()[10 * 512], 0xab);
  EXPECT_EQ(disk->bytes()[11 * 512], 12);
  BlkCounters c = blk->counters();
  EXPECT_EQ(c.read_ops, 1u);
  EXPECT_EQ(c.read_bytes, 1024u);
  EXPECT_EQ(c.write_ops, 1u);
  EXPECT_EQ(c.write_bytes, 512u);
  EXPECT_EQ(c.flush_ops, 1u);
  EXPECT_EQ(c.errors, 0u);
  EXPECT_GE(irq.queue_signals.load(), 1);
}

TEST_F(BlkFixture, DiscardAndWriteZeroes) {
  make();
  start();
  uint16_t d = send(kBlkTDiscard, 0, 0, false, segment(2, 2, 0));
  uint16_t z = send(kBlkTWriteZeroes, 0, 0, false, segment(8, 1, 1));
  uint16_t bad = send(kBlkTDiscard, 0, 0, false, segment(2, 1, 1));  // unmap on discard
  uint16_t past = send(kBlkTWriteZeroes, 0, 0, false, segment(63, 2, 0));
  ASSERT_TRUE(wait_used(4));
  EXPECT_EQ(status_of(d), kBlkSOk);
  EXPECT_EQ(status_of(z), kBlkSOk);
  EXPECT_EQ(status_of(bad), kBlkSUnsupp);
  EXPECT_EQ(status_of(past), kBlkSIoErr);
  blk->reset();
  EXPECT_EQ(disk->bytes()[2 * 512], 0);
  EXPECT_EQ(disk->bytes()[4 * 512 - 1], 0);
  EXPECT_EQ(disk->bytes()[4 * 512], 5);
  EXPECT_EQ(disk->bytes()[8 * 512 + 7], 0);
  EXPECT_EQ(blk->counters().discard_ops, 1u);
  EXPECT_EQ(blk->counters().write_zeroes_bytes, 512u);
}

TEST_F(BlkFixture, ReadOnlyRefusesWritesButServesReadsFlushAndGetId) {
  make({.read_only = true, .num_queues = 1, .queue_size = kSize, .serial = "ro", .id = "d"});
  EXPECT_TRUE(blk->device_features() & kBlkFRo);
  start();
  uint16_t w = send(kBlkTOut, 0, 512, false);
  uint16_t d = send(kBlkTDiscard, 0, 0, false, segment(0, 1, 0));
  uint16_t z = send(kBlkTWriteZeroes, 0, 0, false, segment(0, 1, 0));
  uint16_t r = send(kBlkTIn, 0, 512, true);
  uint16_t f = send(kBlkTFlush, 0, 0, false);
  uint16_t id = send(kBlkTGetId, 0, 20, true);
  ASSERT_TRUE(wait_used(6));
  EXPECT_EQ(status_of(w), kBlkSIoErr);
  EXPECT_EQ(status_of(d), kBlkSIoErr);
  EXPECT_EQ(status_of(z), kBlkSIoErr);
  EXPECT_EQ(status_of(r), kBlkSOk);
  EXPECT_EQ(status_of(f), kBlkSOk);
  EXPECT_EQ(status_of(id), kBlkSOk);
  EXPECT_EQ(std::string(reinterpret_cast<char*>(data_of(id))), "ro");
  blk->reset();
  EXPECT_EQ(disk->bytes()[0], 1);  // untouched
}

TEST_F(BlkFixture, UnknownTypeOutOfRangeAndBackendError) {
  make();
  start();
  uint16_t u = send(99, 0, 0, false);
  uint16_t past = send(kBlkTIn, 63, 1024, true);
  uint16_t odd = send(kBlkTIn, 0, 100, true);
  ASSERT_TRUE(wait_used(3));
  disk->fail_next = true;
  uint16_t e = send(kBlkTIn, 0, 512, true);
  ASSERT_TRUE(wait_used(4));
  EXPECT_EQ(status_of(u), kBlkSUnsupp);
  EXPECT_EQ(status_of(past), kBlkSIoErr);
  EXPECT_EQ(status_of(odd), kBlkSIoErr);
  EXPECT_EQ(status_of(e), kBlkSIoErr);
  EXPECT_EQ(blk->counters().errors, 4u);
}

// A backend error reaches the host: one log line per kind with the
// backend's message (repeats are rate-limited), and the disk's counters say
// which kind each error was.
TEST_F(BlkFixture, BackendErrorIsLoggedWithItsMessageAndCountedByKind) {
  VirtioBlkOptions o;
  o.id = "disk7";
  make(o);
  start();
  ::testing::internal::CaptureStderr();
  for (uint16_t i = 0; i < 3; ++i) {
    disk->fail_next = true;
    send(kBlkTOut, 2, 512, false);
    ASSERT_TRUE(wait_used(i + 1));
  }
  send(99, 0, 0, false);               // unknown type: UNSUPP
  send(kBlkTIn, 63, 1024, true);       // past the end: refused
  ASSERT_TRUE(wait_used(5));
  std::string log = ::testing::internal::GetCapturedStderr();
  const std::string line =
      "tern: virtio-blk disk7: write of 512 bytes at offset 1024 failed: write failed: Input/output error\n";
  EXPECT_NE(log.find(line), std::string::npos) << log;
  EXPECT_EQ(log.find(line), log.rfind(line)) << "repeats of one kind must be rate-limited:\n" << log;
  BlkCounters c = blk->counters();
  EXPECT_EQ(c.errors, 5u);
  EXPECT_EQ(c.errors_io, 3u);
  EXPECT_EQ(c.errors_unsupported, 1u);
  EXPECT_EQ(c.errors_invalid, 1u);
  EXPECT_EQ(c.errors_no_space + c.errors_image + c.errors_other, 0u);
}

TEST_F(BlkFixture, CompletesOutOfOrder) {
  make();
  disk->hold = true;
  start();
  uint16_t a = send(kBlkTIn, 1, 512, true);
  uint16_t b = send(kBlkTIn, 2, 512, true);
  ASSERT_TRUE(wait_for([&] { return disk->context(0) && disk->context(0)->held() == 2; }));
  EXPECT_EQ(driver.used_idx(), 0);
  disk->context(0)->release_reverse();
  ASSERT_TRUE(wait_used(2));
  // The second request (head 3: each request uses 3 descriptors) finished first.
  EXPECT_EQ(driver.used_elem(0).first, 3u);
  EXPECT_EQ(driver.used_elem(1).first, 0u);
  EXPECT_EQ(status_of(a), kBlkSOk);
  EXPECT_EQ(status_of(b), kBlkSOk);
  EXPECT_EQ(data_of(a)[0], 2);
  EXPECT_EQ(data_of(b)[0], 3);
}

TEST_F(BlkFixture, ResetWaitsForRequestsInFlight) {
  make();
  disk->hold = true;
  start();
  send(kBlkTIn, 1, 512, true);
  ASSERT_TRUE(wait_for([&] { return disk->context(0) && disk->context(0)->held() == 1; }));
  std::thread releaser([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    disk->context(0)->release_reverse();
  });
  blk->reset();  // returns only once the backend is done with guest memory
  releaser.join();
  EXPECT_EQ(driver.used_idx(), 0);  // detached: the old ring is not touched
}

TEST_F(BlkFixture, ResizeRaisesConfigInterrupt) {
  make();
  start();
  uint8_t gen = blk->config_generation();
  ASSERT_TRUE(blk->resize(kDiskBytes * 2).has_value());
  EXPECT_EQ(blk->capacity_sectors(), kDiskBytes * 2 / 512);
  EXPECT_NE(blk->config_generation(), gen);
  EXPECT_EQ(irq.config_signals.load(), 1);
  uint64_t capacity;
  blk->read_config(0, std::span<uint8_t>(reinterpret_cast<uint8_t*>(&capacity), 8));
  EXPECT_EQ(capacity, kDiskBytes * 2 / 512);
  // A write past the old end now succeeds.
  uint16_t w = send(kBlkTOut, kDiskBytes / 512 + 1, 512, false);
  ASSERT_TRUE(wait_used(1));
  EXPECT_EQ(status_of(w), kBlkSOk);
  EXPECT_FALSE(blk->resize(kDiskBytes).has_value());  // shrink refused
}

TEST_F(BlkFixture, HostileChainNeedsResetAndDeviceSurvives) {
  make();
  start();
  driver.add_chain({{kHdr, 16, false}, {kRam - 8, 512, true}, {kStatus, 1, true}});
  notify.signal();
  ASSERT_TRUE(wait_for([&] { return irq.resets.load() == 1; }));
  {
    std::lock_guard lock(irq.mutex);
    EXPECT_NE(irq.reasons[0].find("outside guest RAM"), std::string::npos);
  }
  blk->reset();
  // Re-initialised on fresh rings, it works again.
  std::memset(ram.at(0x1000), 0, 0x1000);
  driver = DriverQueue(ram, kSize, 0x1000);
  next_req = 0;
  start();
  uint16_t r = send(kBlkTIn, 0, 512, true);
  ASSERT_TRUE(wait_used(1));
  EXPECT_EQ(status_of(r), kBlkSOk);
}

TEST_F(BlkFixture, TwoQueuesServeIndependently) {
  make({.read_only = false, .num_queues = 2, .queue_size = kSize, .serial = "", .id = "d"});
  DriverQueue q1(ram, kSize, 0x3000);
  EventFd notify1 = *EventFd::create();
  // Queue 1's worker polls notify1: stop the workers before it closes,
  // however the test ends (TSan saw the close race the worker's read).
  struct StopWorkersFirst {
    VirtioBlk* device;
    ~StopWorkersFirst() { device->reset(); }
  } stop_workers_first{blk.get()};
  blk->activate(ram.memory(), features | blk->device_features(),
                {ActiveQueue{0, driver.config(), notify.fd()},
                 ActiveQueue{1, q1.config(), notify1.fd()}},
                irq);
  ram.put<uint32_t>(kHdr + 0x8000, kBlkTIn);
  ram.put<uint64_t>(kHdr + 0x8008, 5);
  q1.add_chain({{kHdr + 0x8000, 16, false}, {kData + 0x80000, 512, true}, {kStatus + 0x800, 1, true}});
  notify1.signal();
  ASSERT_TRUE(wait_for([&] { return q1.used_idx() == 1; }));
  EXPECT_EQ(ram.get<uint8_t>(kStatus + 0x800), kBlkSOk);
  EXPECT_EQ(ram.get<uint8_t>(kData + 0x80000), 6);
  EXPECT_EQ(driver.used_idx(), 0);
}

}  // namespace
}  // namespace tern::devices

// The virtio-mmio transport, register by register, then what a hostile
// driver may write (odd sizes and offsets, queue select out of range, ready
// with bad addresses, status moving backwards, random writes): every access
// is answered and the device still works after a reset.
#include "devices/virtio/transport/mmio.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <random>
#include <thread>

#include "devices/virtio/blk/factory.h"
#include "devices/virtio/blk/device.h"
#include "tests/devices/virtio/fakes.h"

namespace tern::devices {
namespace {

using testing::DriverQueue;
using testing::FakeVmServices;
using testing::MemDisk;
using testing::TestRam;
using testing::wait_for;
namespace r = mmio_reg;

constexpr uint16_t kSize = 16;
constexpr uint64_t kBase = 0xe0100000;
constexpr uint32_t kGsi = 5;
constexpr uint8_t kAll = kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk | kStatusDriverOk;

struct MmioFixture : ::testing::Test {
  TestRam ram{4 << 20};
  FakeVmServices vm;
  std::unique_ptr<VirtioMmioDevice> dev;
  VirtioBlk* blk = nullptr;
  MemDisk* disk = nullptr;

  void SetUp() override {
    auto d = std::make_unique<MemDisk>(64 * 512);
    disk = d.get();
    auto made = make_virtio_blk({}, VirtioBlkOptions{.num_queues = 2, .queue_size = kSize, .serial = "s", .id = "m"},
                                VirtioTransport::Mmio, {.base = kBase, .gsi = kGsi}, vm, ram.memory(), std::move(d));
    ASSERT_TRUE(made.has_value()) << made.error().message;
    dev = std::move(made->mmio);
    blk = made->blk;
  }

  uint32_t rd(uint64_t off) {
    uint32_t v = 0;
    dev->read(off, std::span<uint8_t>(reinterpret_cast<uint8_t*>(&v), 4));
    return v;
  }
  void wr(uint64_t off, uint32_t v) {
    dev->write(off, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(&v), 4));
  }
  int irq_triggers() {
    std::lock_guard lock(vm.mutex);
    return vm.lines.at(0)->triggers.load();
  }
  uint64_t features() {
    wr(r::kDeviceFeaturesSel, 0);
    uint64_t lo = rd(r::kDeviceFeatures);
    wr(r::kDeviceFeaturesSel, 1);
    return lo | uint64_t{rd(r::kDeviceFeatures)} << 32;
  }
  void negotiate(uint64_t f) {
    wr(r::kStatus, kStatusAcknowledge);
    wr(r::kStatus, kStatusAcknowledge | kStatusDriver);
    wr(r::kDriverFeaturesSel, 0);
    wr(r::kDriverFeatures, static_cast<uint32_t>(f));
    wr(r::kDriverFeaturesSel, 1);
    wr(r::kDriverFeatures, static_cast<uint32_t>(f >> 32));
    wr(r::kStatus, kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk);
  }
  void setup_queue(uint32_t q, const QueueConfig& c) {
    wr(r::kQueueSel, q);
    wr(r::kQueueNum, c.size);
    wr(r::kQueueDescLow, static_cast<uint32_t>(c.desc_addr));
    wr(r::kQueueDescHigh, static_cast<uint32_t>(c.desc_addr >> 32));
    wr(r::kQueueDriverLow, static_cast<uint32_t>(c.avail_addr));
    wr(r::kQueueDriverHigh, static_cast<uint32_t>(c.avail_addr >> 32));
    wr(r::kQueueDeviceLow, static_cast<uint32_t>(c.used_addr));
    wr(r::kQueueDeviceHigh, static_cast<uint32_t>(c.used_addr >> 32));
    wr(r::kQueueReady, 1);
  }
  // A read of sector 7 on queue `q`, notified through the register.
  void read_sector_7(DriverQueue& dq, uint32_t q) {
    disk->bytes()[512 * 7] = 0x77;
    ram.put<uint32_t>(0x100000, kBlkTIn);
    ram.put<uint64_t>(0x100008, 7);
    dq.add_chain({{0x100000, 16, false}, {0x200000, 512, true}, {0x300000, 1, true}});
    wr(r::kQueueNotify, q);
  }
  void expect_works_after_reset() {
    wr(r::kStatus, 0);
    ASSERT_EQ(rd(r::kStatus), 0u);
    std::memset(ram.at(0x20000), 0, 0x1000);  // a fresh ring, not one an earlier call left
    DriverQueue dq(ram, kSize, 0x20000);
    negotiate(features());
    setup_queue(0, dq.config());
    wr(r::kStatus, kAll);
    ASSERT_EQ(rd(r::kStatus) & kStatusNeedsReset, 0u);
    read_sector_7(dq, 0);
    ASSERT_TRUE(wait_for([&] { return dq.used_idx() == 1; }));
    EXPECT_EQ(ram.get<uint8_t>(0x300000), kBlkSOk);
    EXPECT_EQ(ram.get<uint8_t>(0x200000), 0x77);
  }
};

TEST_F(MmioFixture, IdentityRegisters) {
  EXPECT_EQ(rd(r::kMagic), 0x74726976u);
  EXPECT_EQ(rd(r::kVersion), 2u);
  EXPECT_EQ(rd(r::kDeviceId), 2u);
  EXPECT_EQ(rd(r::kVendorId), kVirtioMmioVendor);
  EXPECT_EQ(rd(r::kConfigGeneration), 0u);
  EXPECT_EQ(rd(r::kStatus), 0u);
  EXPECT_EQ(rd(r::kInterruptStatus), 0u);
  wr(r::kShmSel, 0);
  EXPECT_EQ(rd(r::kShmLenLow), 0xffffffffu);  // no shared memory regions
  EXPECT_EQ(rd(r::kShmBaseHigh), 0xffffffffu);
  EXPECT_EQ(dev->base(), kBase);
  EXPECT_EQ(dev->gsi(), kGsi);
  std::lock_guard lock(vm.mutex);
  ASSERT_EQ(vm.lines.size(), 1u);
  EXPECT_EQ(vm.lines[0]->gsi, kGsi);
}

TEST_F(MmioFixture, QueueNotifyIoeventfdsOnePerQueue) {
  std::lock_guard lock(vm.mutex);
  ASSERT_EQ(vm.ioeventfds.size(), 2u);
  for (auto& e : vm.ioeventfds) {
    EXPECT_EQ(e.addr, kBase + r::kQueueNotify);
    EXPECT_EQ(e.len, 4u);
  }
  EXPECT_NE(vm.ioeventfds[0].fd, vm.ioeventfds[1].fd);
}

TEST_F(MmioFixture, FeatureSelectorsAndQueueRegisters) {
  uint64_t f = features();
  EXPECT_TRUE(f & kVirtioFVersion1);
  EXPECT_TRUE(f & kBlkFMq);
  wr(r::kDeviceFeaturesSel, 2);
  EXPECT_EQ(rd(r::kDeviceFeatures), 0u);
  wr(r::kQueueSel, 1);
  EXPECT_EQ(rd(r::kQueueNumMax), kSize);
  wr(r::kQueueNum, 8);
  EXPECT_EQ(rd(r::kQueueNum), 8u);
  wr(r::kQueueDescLow, 0x1234000);
  wr(r::kQueueDescHigh, 1);
  EXPECT_EQ(rd(r::kQueueDescLow), 0x1234000u);
  EXPECT_EQ(rd(r::kQueueDescHigh), 1u);
  wr(r::kQueueReady, 1);
  EXPECT_EQ(rd(r::kQueueReady), 1u);
  wr(r::kQueueNum, 4);  // ready: frozen
  EXPECT_EQ(rd(r::kQueueNum), 8u);
  wr(r::kQueueSel, 0);
  EXPECT_EQ(rd(r::kQueueReady), 0u);
  EXPECT_EQ(rd(r::kDriverFeatures), 0u);  // write-only registers read 0
}

TEST_F(MmioFixture, RequestOnQueue1RaisesTheLineAndAckClearsIt) {
  DriverQueue q0(ram, kSize, 0x1000), q1(ram, kSize, 0x3000);
  negotiate(features());
  setup_queue(0, q0.config());
  setup_queue(1, q1.config());
  wr(r::kStatus, kAll);
  ASSERT_EQ(rd(r::kStatus), kAll);
  read_sector_7(q1, 1);
  ASSERT_TRUE(wait_for([&] { return q1.used_idx() == 1 && irq_triggers() >= 1; }));
  EXPECT_EQ(ram.get<uint8_t>(0x200000), 0x77);
  EXPECT_EQ(q1.used_elem(0).second, 513u);
  EXPECT_EQ(rd(r::kInterruptStatus), kMmioIntUsedBuffer);
  wr(r::kInterruptAck, kMmioIntUsedBuffer);
  EXPECT_EQ(rd(r::kInterruptStatus), 0u);
}

TEST_F(MmioFixture, ResizeChangesConfigAndGenerationAndRaisesConfigInterrupt) {
  DriverQueue q0(ram, kSize, 0x1000);
  negotiate(features());
  setup_queue(0, q0.config());
  wr(r::kStatus, kAll);
  EXPECT_EQ(rd(r::kConfig), 64u);  // capacity, sectors
  ASSERT_TRUE(blk->resize(128 * 512).has_value());
  EXPECT_EQ(rd(r::kConfig), 128u);
  EXPECT_EQ(rd(r::kConfigGeneration), 1u);
  EXPECT_EQ(rd(r::kInterruptStatus) & kMmioIntConfig, kMmioIntConfig);
  EXPECT_GE(irq_triggers(), 1);
  uint8_t b = 0xaa;  // 8-bit config access
  dev->read(r::kConfig + 1, std::span<uint8_t>(&b, 1));
  EXPECT_EQ(b, 0);
}

// ---- hostile drivers ----

TEST_F(MmioFixture, OddSizesAndOffsetsReadZeroAndWriteNothing) {
  for (uint64_t off : {r::kMagic, r::kStatus, r::kQueueNumMax}) {
    for (size_t len : {1u, 2u, 8u}) {
      std::vector<uint8_t> buf(len, 0xaa);
      dev->read(off, buf);
      EXPECT_EQ(buf, std::vector<uint8_t>(len, 0)) << off << " " << len;
    }
  }
  uint8_t one = kStatusAcknowledge;
  dev->write(r::kStatus, std::span<const uint8_t>(&one, 1));
  EXPECT_EQ(rd(r::kStatus), 0u);
  uint64_t eight = 0xffffffffffffffff;
  dev->write(r::kQueueSel, std::span<const uint8_t>(reinterpret_cast<uint8_t*>(&eight), 8));
  wr(r::kQueueSel, 0);
  EXPECT_EQ(rd(r::kQueueNumMax), kSize);
  wr(r::kStatus + 1, 0xffffffff);  // misaligned
  EXPECT_EQ(rd(r::kStatus), 0u);
  EXPECT_EQ(rd(r::kStatus + 2), 0u);
  // Past the region and straddling its end: nothing, no crash.
  uint32_t v = 0x12345678;
  dev->write(kVirtioMmioSize - 2, std::span<const uint8_t>(reinterpret_cast<uint8_t*>(&v), 4));
  dev->write(kVirtioMmioSize + 0x100, std::span<const uint8_t>(reinterpret_cast<uint8_t*>(&v), 4));
  dev->read(~uint64_t{0} - 1, std::span<uint8_t>(reinterpret_cast<uint8_t*>(&v), 4));
  EXPECT_EQ(v, 0u);
  wr(r::kMagic, 0);  // read-only
  EXPECT_EQ(rd(r::kMagic), kVirtioMmioMagic);
  expect_works_after_reset();
}

TEST_F(MmioFixture, QueueSelectOutOfRangeIsInert) {
  negotiate(features());
  for (uint32_t sel : {2u, 64u, 0xffffu, 0x10000u, 0xffffffffu}) {
    wr(r::kQueueSel, sel);
    EXPECT_EQ(rd(r::kQueueNumMax), 0u) << sel;
    wr(r::kQueueNum, 8);
    wr(r::kQueueDescLow, 0x1000);
    wr(r::kQueueReady, 1);
    EXPECT_EQ(rd(r::kQueueReady), 0u) << sel;
    EXPECT_EQ(rd(r::kQueueNum), 0u) << sel;
    wr(r::kQueueNotify, sel);  // names no queue
  }
  wr(r::kStatus, kAll);  // no queue ready: the device activates with none
  EXPECT_EQ(rd(r::kStatus) & kStatusNeedsReset, 0u);
  expect_works_after_reset();
}

TEST_F(MmioFixture, ReadyWithBadAddressesEndsInNeedsReset) {
  negotiate(features());
  setup_queue(0, QueueConfig{kSize, 0xfff00000000, 0x1000, 0x2000});  // outside RAM
  wr(r::kStatus, kAll);
  EXPECT_TRUE(rd(r::kStatus) & kStatusNeedsReset);
  EXPECT_TRUE(rd(r::kInterruptStatus) & kMmioIntConfig);
  expect_works_after_reset();

  wr(r::kStatus, 0);
  negotiate(features());
  setup_queue(0, QueueConfig{3, 0x1000, 0x2000, 0x3000});  // not a power of two
  wr(r::kStatus, kAll);
  EXPECT_TRUE(rd(r::kStatus) & kStatusNeedsReset);
  wr(r::kStatus, 0);
  negotiate(features());
  setup_queue(0, QueueConfig{kSize, 0x1001, 0x2000, 0x3000});  // misaligned ring
  wr(r::kStatus, kAll);
  EXPECT_TRUE(rd(r::kStatus) & kStatusNeedsReset);
  expect_works_after_reset();
}

TEST_F(MmioFixture, StatusMovingBackwardsIsRefused) {
  DriverQueue q0(ram, kSize, 0x1000);
  negotiate(features());
  setup_queue(0, q0.config());
  wr(r::kStatus, kAll);
  wr(r::kStatus, kStatusAcknowledge | kStatusDriver);  // clears FEATURES_OK and DRIVER_OK
  EXPECT_EQ(rd(r::kStatus), kAll);
  wr(r::kStatus, 0x1ff);  // more than a byte
  EXPECT_EQ(rd(r::kStatus), kAll);
  wr(r::kStatus, kAll | kStatusFailed);  // the driver gives up: allowed
  EXPECT_EQ(rd(r::kStatus), kAll | kStatusFailed);
  expect_works_after_reset();
}

// 4.2.2 QueueReady: "Reading from this register returns the last value
// written to it." Linux's vm_setup_vq error path and vm_del_vq write 0 and
// WARN when it still reads 1, and a later set-up of the same queue fails
// with -ENOENT while it does. A 0 disables the queue: its registers take
// writes again, and a 1 enables it again with what they hold. Before, the
// 0 was ignored (the queue stayed ready and frozen).
TEST_F(MmioFixture, QueueReadyZeroDisablesTheQueueBeforeDriverOk) {
  DriverQueue q0(ram, kSize, 0x1000);
  negotiate(features());
  setup_queue(0, QueueConfig{kSize, 0x7000, 0x8000, 0x9000});  // a set-up the driver then abandons
  ASSERT_EQ(rd(r::kQueueReady), 1u);
  wr(r::kQueueReady, 0);
  EXPECT_EQ(rd(r::kQueueReady), 0u) << "QueueReady must read back the 0 just written";
  setup_queue(0, q0.config());  // the retried set-up: the registers take the new rings
  EXPECT_EQ(rd(r::kQueueDescLow), static_cast<uint32_t>(q0.config().desc_addr));
  EXPECT_EQ(rd(r::kQueueReady), 1u);
  wr(r::kStatus, kAll);
  ASSERT_EQ(rd(r::kStatus) & kStatusNeedsReset, 0u);
  read_sector_7(q0, 0);
  ASSERT_TRUE(wait_for([&] { return q0.used_idx() == 1; }));
  EXPECT_EQ(ram.get<uint8_t>(0x300000), kBlkSOk);
  EXPECT_EQ(ram.get<uint8_t>(0x200000), 0x77);
}

// After DRIVER_OK a 0 stops the device serving that queue (a notification
// is no longer answered), the registers take writes again, and a 1 starts
// it again on the rings they then name.
TEST_F(MmioFixture, QueueReadyZeroStopsAQueueAfterDriverOkAndOneRestartsIt) {
  DriverQueue q0(ram, kSize, 0x1000), q1(ram, kSize, 0x3000);
  negotiate(features());
  setup_queue(0, q0.config());
  setup_queue(1, q1.config());
  wr(r::kStatus, kAll);
  read_sector_7(q1, 1);
  ASSERT_TRUE(wait_for([&] { return q1.used_idx() == 1; }));
  wr(r::kQueueSel, 1);
  wr(r::kQueueReady, 0);
  EXPECT_EQ(rd(r::kQueueReady), 0u);
  // Disabled: a request made available and notified stays unanswered
  // (the queue's thread is gone, so nothing could answer it later either).
  read_sector_7(q1, 1);
  wr(r::kQueueNotify, 1);
  // Queue 0 still works meanwhile.
  read_sector_7(q0, 0);
  ASSERT_TRUE(wait_for([&] { return q0.used_idx() == 1; }));
  EXPECT_EQ(q1.used_idx(), 1u);
  // Set up again on fresh rings, then enabled: served from the start.
  std::memset(ram.at(0x5000), 0, 0x2000);
  DriverQueue fresh(ram, kSize, 0x5000);
  setup_queue(1, fresh.config());
  EXPECT_EQ(rd(r::kQueueDescLow), static_cast<uint32_t>(fresh.config().desc_addr));
  EXPECT_EQ(rd(r::kQueueReady), 1u);
  ram.put<uint8_t>(0x200000, 0);
  read_sector_7(fresh, 1);
  ASSERT_TRUE(wait_for([&] { return fresh.used_idx() == 1; }));
  EXPECT_EQ(ram.get<uint8_t>(0x200000), 0x77);
  EXPECT_EQ(rd(r::kStatus) & kStatusNeedsReset, 0u);
  expect_works_after_reset();
}

// A disk whose size is all it has: resizes of terabytes cost nothing.
class SizeOnlyDisk final : public block::DiskFile {
 public:
  explicit SizeOnlyDisk(uint64_t size) : size_(size) {}
  std::string_view format_name() const override { return "size-only"; }
  uint64_t size() const override { return size_.load(); }
  block::Result<void> resize(uint64_t new_size) override {
    size_.store(new_size);
    return {};
  }
  block::Topology topology() const override { return {}; }
  block::Capabilities capabilities() const override { return {}; }
  block::Result<std::unique_ptr<block::IoContext>> make_io_context(uint32_t) override {
    return block::fail(block::Errc::Unsupported);
  }
  block::Result<void> close() override { return {}; }
  uint64_t allocated_bytes() const override { return 0; }
  void image_fds(std::vector<int>&) const override {}

 private:
  std::atomic<uint64_t> size_;
};

// 4.2.2.2 (and "Device Configuration Space" for every transport): a
// driver reads a field wider than 32 bits as two register reads between
// two reads of ConfigGeneration, and retries when the generation changed. So a read
// whose generations match must see one value that was really set. Two
// capacities whose high and low halves both differ: a torn read would show
// 0x100000000 or 0x2ffffffff. Before, resize stored the capacity and only
// then moved the generation, so a driver could read the low half before
// the store, the high half and the second generation after it, and see the
// same generation around a value that never existed.
TEST(MmioConfigGeneration, CapacityReadAcrossResizesIsWholeWhenTheGenerationIsUnchanged) {
  constexpr uint64_t kA = 0x1ffffffffull, kB = 0x200000000ull;  // sectors
  TestRam ram{1 << 20};
  FakeVmServices vm;
  auto made = make_virtio_blk({}, VirtioBlkOptions{.num_queues = 1, .queue_size = kSize, .serial = "", .id = "g"},
                              VirtioTransport::Mmio, {.base = kBase, .gsi = kGsi}, vm, ram.memory(),
                              std::make_unique<SizeOnlyDisk>(kA * 512));
  ASSERT_TRUE(made.has_value()) << made.error().message;
  VirtioMmioDevice& dev = *made->mmio;
  VirtioBlk& blk = *made->blk;
  std::atomic<uint64_t> resizes{0};
  std::atomic<bool> stop{false};
  // One thread moves the capacity between the two values as fast as it can.
  std::jthread resizer([&] {
    for (uint64_t i = 0; !stop.load(); ++i) {
      ASSERT_TRUE(blk.resize((i % 2 ? kA : kB) * 512).has_value());
      resizes.fetch_add(1);
    }
  });
  std::atomic<uint64_t> torn{0}, whole{0}, example{0};
  // Drivers read as Linux's vm_get/vm_generation do; several, so that
  // one is likely mid-read whenever the resizing thread is preempted.
  auto driver = [&] {
    auto rd = [&](uint64_t off) {
      uint32_t v = 0;
      dev.read(off, std::span<uint8_t>(reinterpret_cast<uint8_t*>(&v), 4));
      return v;
    };
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(3);
    while (std::chrono::steady_clock::now() < deadline && torn.load() == 0) {
      for (int i = 0; i < 1000; ++i) {
        uint64_t before = resizes.load();
        uint32_t g1 = rd(r::kConfigGeneration);
        uint64_t lo = rd(r::kConfig), hi = rd(r::kConfig + 4);
        uint32_t g2 = rd(r::kConfigGeneration);
        // The generation is 8 bits: equal after 256 changes proves nothing.
        if (g1 != g2 || resizes.load() - before >= 255) continue;
        uint64_t v = lo | hi << 32;
        if (v == kA || v == kB) {
          whole.fetch_add(1);
        } else {
          example.store(v);
          torn.fetch_add(1);
        }
      }
    }
  };
  {
    std::jthread d1(driver), d2(driver), d3(driver);
  }
  stop.store(true);
  resizer.join();
  EXPECT_EQ(torn.load(), 0u) << "a capacity of 0x" << std::hex << example.load()
                             << " was read with an unchanged generation (" << std::dec << whole.load()
                             << " whole reads, " << resizes.load() << " resizes)";
  EXPECT_GT(whole.load(), 0u);
}

TEST_F(MmioFixture, RandomWritesNeverCrashAndResetRecovers) {
  std::mt19937_64 rng(13);
  for (int i = 0; i < 20000; ++i) {
    uint64_t off = rng() % (kVirtioMmioSize + 16);
    size_t len = size_t{1} << (rng() % 4);
    uint64_t value = rng();
    if (rng() % 8 == 0) off = r::kStatus, len = 4, value = rng() % 256;
    if (off == r::kQueueNotify && rng() % 2) value = rng() % 3;
    if (rng() % 2) {
      dev->write(off, std::span<const uint8_t>(reinterpret_cast<uint8_t*>(&value), len));
    } else {
      dev->read(off, std::span<uint8_t>(reinterpret_cast<uint8_t*>(&value), len));
    }
  }
  expect_works_after_reset();
}

}  // namespace
}  // namespace tern::devices

#include "devices/virtio/transport/pci.h"

#include <gtest/gtest.h>

#include "devices/virtio/blk/device.h"
#include "devices/virtio/blk/factory.h"
#include "tests/devices/virtio/fakes.h"

namespace tern::devices {
namespace {

using testing::DriverQueue;
using testing::FakeVmServices;
using testing::MemDisk;
using testing::TestRam;
using testing::wait_for;

constexpr uint16_t kSize = 16;

struct PciFixture : ::testing::Test {
  TestRam ram{4 << 20};
  FakeVmServices vm;
  std::unique_ptr<VirtioPciDevice> dev;
  MemDisk* disk = nullptr;

  void SetUp() override {
    auto d = std::make_unique<MemDisk>(64 * 512);
    disk = d.get();
    auto blk = std::make_unique<VirtioBlk>(
        std::move(d), VirtioBlkOptions{.read_only = false, .num_queues = 2, .queue_size = kSize,
                                       .serial = "s", .id = "d"});
    auto r = VirtioPciDevice::create(std::move(blk), vm, ram.memory(), "virtio-blk d");
    ASSERT_TRUE(r.has_value());
    dev = std::move(*r);
  }

  template <class T>
  T rd(uint64_t off) {
    T v{};
    dev->bar_read(0, off, std::span<uint8_t>(reinterpret_cast<uint8_t*>(&v), sizeof v));
    return v;
  }
  template <class T>
  void wr(uint64_t off, T v) {
    dev->bar_write(0, off, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(&v), sizeof v));
  }
  template <class T>
  T cfg(uint32_t off) {
    T v{};
    dev->config_read(off, std::span<uint8_t>(reinterpret_cast<uint8_t*>(&v), sizeof v));
    return v;
  }
  template <class T>
  void cfg_wr(uint32_t off, T v) {
    dev->config_write(off, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(&v), sizeof v));
  }
  uint64_t features() { 
    wr<uint32_t>(0x00, 0);
    uint64_t lo = rd<uint32_t>(0x04);
    wr<uint32_t>(0x00, 1);
    return lo | (uint64_t{rd<uint32_t>(0x04)} << 32);
  }
  void negotiate(uint64_t f) {
    wr<uint8_t>(0x14, kStatusAcknowledge);
    wr<uint8_t>(0x14, kStatusAcknowledge | kStatusDriver);
    wr<uint32_t>(0x08, 0);
    wr<uint32_t>(0x0c, static_cast<uint32_t>(f));
    wr<uint32_t>(0x08, 1);
    wr<uint32_t>(0x0c, static_cast<uint32_t>(f >> 32));
    wr<uint8_t>(0x14, kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk);
  }
  void setup_queue(uint16_t q, const DriverQueue& dq, uint16_t vector) {
    wr<uint16_t>(0x16, q);
    wr<uint16_t>(0x18, kSize);
    wr<uint16_t>(0x1a, vector);
    QueueConfig c = dq.config();
    wr<uint32_t>(0x20, static_cast<uint32_t>(c.desc_addr));  // two halves, like Linux
    wr<uint32_t>(0x24, static_cast<uint32_t>(c.desc_addr >> 32));
    wr<uint64_t>(0x28, c.avail_addr);
    wr<uint64_t>(0x30, c.used_addr);
    wr<uint16_t>(0x1c, 1);
  }
  void enable_msix() {
    uint8_t cap = cfg<uint8_t>(0x34);
    while (cap && cfg<uint8_t>(cap) != 0x11) cap = cfg<uint8_t>(cap + 1);
    ASSERT_NE(cap, 0);
    cfg_wr<uint16_t>(cap + 2, 0x8000);
    for (uint64_t v = 0; v < 3; ++v) {
      wr<uint32_t>(kMsixTableOffset + 16 * v, 0xfee00000);
      wr<uint32_t>(kMsixTableOffset + 16 * v + 4, 0);
      wr<uint32_t>(kMsixTableOffset + 16 * v + 8, static_cast<uint32_t>(0x40 + v));
      wr<uint32_t>(kMsixTableOffset + 16 * v + 12, 0);  // unmask
    }
  }
};

TEST_F(PciFixture, IdentityAndCapabilities) {
  EXPECT_EQ(cfg<uint16_t>(0), 0x1af4);
  EXPECT_EQ(cfg<uint16_t>(2), 0x1042);
  EXPECT_EQ(cfg<uint8_t>(8), 1);
  EXPECT_EQ(cfg<uint32_t>(8) >> 8, 0x018000u);
  EXPECT_EQ(cfg<uint16_t>(0x2e), 2);
  std::vector<uint8_t> types;
  bool msix = false;
  for (uint8_t cap = cfg<uint8_t>(0x34); cap; cap = cfg<uint8_t>(cap + 1)) {
    if (cfg<uint8_t>(cap) == 0x09) types.push_back(cfg<uint8_t>(cap + 3));
    if (cfg<uint8_t>(cap) == 0x11) {
      msix = true;
      EXPECT_EQ(cfg<uint16_t>(cap + 2) & 0x7ff, 2);  // 3 vectors
    }
    if (cfg<uint8_t>(cap) == 0x09 && cfg<uint8_t>(cap + 3) == 2) {
      EXPECT_EQ(cfg<uint32_t>(cap + 16), 4u);  // notify_off_multiplier
    }
  }
  EXPECT_EQ(types, (std::vector<uint8_t>{1, 2, 3, 4, 5}));
  EXPECT_TRUE(msix);
}

TEST_F(PciFixture, FeatureSelectQueueSelectAndNumQueues) {
  uint64_t f = features();
  EXPECT_TRUE(f & kVirtioFVersion1);
  EXPECT_TRUE(f & kBlkFMq);
  wr<uint32_t>(0x00, 7);
  EXPECT_EQ(rd<uint32_t>(0x04), 0u);
  EXPECT_EQ(rd<uint16_t>(0x12), 2);
  wr<uint16_t>(0x16, 1);
  EXPECT_EQ(rd<uint16_t>(0x16), 1);
  EXPECT_EQ(rd<uint16_t>(0x18), kSize);
  EXPECT_EQ(rd<uint16_t>(0x1e), 1);  // queue_notify_off
  wr<uint16_t>(0x16, 5);
  EXPECT_EQ(rd<uint16_t>(0x18), 0);  // no such queue
  wr<uint16_t>(0x10, 9);             // more vectors than the table has
  EXPECT_EQ(rd<uint16_t>(0x10), kVirtioNoVector);
  wr<uint16_t>(0x10, 2);
  EXPECT_EQ(rd<uint16_t>(0x10), 2);
}

TEST_F(PciFixture, FeaturesOkRefusedForUnofferedOrLegacyFeatures) {
  negotiate(features() & ~kVirtioFVersion1);
  EXPECT_FALSE(rd<uint8_t>(0x14) & kStatusFeaturesOk);
  wr<uint8_t>(0x14, 0);
  negotiate(features() | (1ull << 40));
  EXPECT_FALSE(rd<uint8_t>(0x14) & kStatusFeaturesOk);
  wr<uint8_t>(0x14, 0);
  negotiate(features());
  EXPECT_TRUE(rd<uint8_t>(0x14) & kStatusFeaturesOk);
  // After FEATURES_OK the driver features are frozen.
  wr<uint32_t>(0x08, 0);
  wr<uint32_t>(0x0c, 0);
  EXPECT_NE(rd<uint32_t>(0x0c), 0u);
}

TEST_F(PciFixture, ResetReturnsToInitialState) {
  negotiate(features());
  wr<uint16_t>(0x16, 1);
  wr<uint16_t>(0x18, 4);
  wr<uint64_t>(0x20, 0x1000);
  wr<uint16_t>(0x1c, 1);
  wr<uint16_t>(0x10, 0);
  wr<uint8_t>(0x14, 0);
  EXPECT_EQ(rd<uint8_t>(0x14), 0);
  EXPECT_EQ(rd<uint16_t>(0x16), 0);
  EXPECT_EQ(rd<uint16_t>(0x10), kVirtioNoVector);
  wr<uint16_t>(0x16, 1);
  EXPECT_EQ(rd<uint16_t>(0x18), kSize);
  EXPECT_EQ(rd<uint16_t>(0x1c), 0);
  EXPECT_EQ(rd<uint64_t>(0x20), 0u);
  wr<uint32_t>(0x08, 0);
  EXPECT_EQ(rd<uint32_t>(0x0c), 0u);
}

TEST_F(PciFixture, IoeventfdsFollowTheBar) {
  dev->bar_placed(0, 0xc0000000);
  {
    std::lock_guard lock(vm.mutex);
    ASSERT_EQ(vm.ioeventfds.size(), 2u);
    EXPECT_EQ(vm.ioeventfds[1].addr, 0xc0000000 + kNotifyOffset + 4);
  }
  dev->bar_placed(0, 0xd0000000);
  std::lock_guard lock(vm.mutex);
  ASSERT_EQ(vm.ioeventfds.size(), 2u);
  EXPECT_EQ(vm.ioeventfds[0].addr, 0xd0000000 + kNotifyOffset);
}

TEST_F(PciFixture, EndToEndRequestRaisesItsMsixVector) {
  enable_msix();
  DriverQueue q0(ram, kSize, 0x1000), q1(ram, kSize, 0x3000);
  negotiate(features());
  setup_queue(0, q0, 0);
  setup_queue(1, q1, 1);
  wr<uint16_t>(0x10, 2);
  wr<uint8_t>(0x14, kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk | kStatusDriverOk);
  ASSERT_EQ(rd<uint8_t>(0x14) & kStatusNeedsReset, 0);
  disk->bytes()[512 * 7] = 0x77;
  ram.put<uint32_t>(0x100000, kBlkTIn);
  ram.put<uint64_t>(0x100008, 7);
  q1.add_chain({{0x100000, 16, false}, {0x200000, 512, true}, {0x300000, 1, true}});
  wr<uint16_t>(kNotifyOffset + 4, 1);  // notify queue 1 (no ioeventfd in this test)
  ASSERT_TRUE(wait_for([&] { return q1.used_idx() == 1; }));
  EXPECT_EQ(ram.get<uint8_t>(0x200000), 0x77);
  ASSERT_TRUE(wait_for([&] { return vm.irqs[1]->triggers.load() == 1; }));
  {
    std::lock_guard lock(vm.irqs[1]->mutex);
    ASSERT_TRUE(vm.irqs[1]->message.has_value());
    EXPECT_EQ(vm.irqs[1]->message->data, 0x41u);
  }
  EXPECT_EQ(vm.irqs[0]->triggers.load(), 0);
  // Resize: config vector 2.
  ASSERT_TRUE(static_cast<VirtioBlk&>(dev->device()).resize(128 * 512).has_value());
  EXPECT_EQ(vm.irqs[2]->triggers.load(), 1);
  EXPECT_EQ(rd<uint64_t>(kDeviceCfgOffset), 128u);
}

TEST_F(PciFixture, MaskedVectorIsPendingUntilUnmasked) {
  enable_msix();
  wr<uint32_t>(kMsixTableOffset + 16 * 2 + 12, 1);  // mask the config vector
  negotiate(features());
  wr<uint16_t>(0x10, 2);
  wr<uint8_t>(0x14, kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk | kStatusDriverOk);
  ASSERT_TRUE(static_cast<VirtioBlk&>(dev->device()).resize(128 * 512).has_value());
  EXPECT_EQ(vm.irqs[2]->triggers.load(), 0);
  EXPECT_EQ(rd<uint8_t>(kMsixPbaOffset), 0x4);
  wr<uint32_t>(kMsixTableOffset + 16 * 2 + 12, 0);
  EXPECT_EQ(vm.irqs[2]->triggers.load(), 1);
  EXPECT_EQ(rd<uint8_t>(kMsixPbaOffset), 0);
  EXPECT_EQ(rd<uint8_t>(kIsrOffset), 2);  // config bit; reading clears it
  EXPECT_EQ(rd<uint8_t>(kIsrOffset), 0);
}

TEST_F(PciFixture, HostileRingSetsNeedsResetThenResetRecovers) {
  enable_msix();
  DriverQueue q0(ram, kSize, 0x1000);
  negotiate(features());
  setup_queue(0, q0, 0);
  wr<uint16_t>(0x10, 2);
  wr<uint8_t>(0x14, kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk | kStatusDriverOk);
  q0.write_desc(0, 0x100000, 16, kVirtqDescFNext, 1);
  q0.write_desc(1, 0x100000, 16, kVirtqDescFNext, 0);  // loop
  q0.publish(0);
  wr<uint16_t>(kNotifyOffset, 0);
  ASSERT_TRUE(wait_for([&] { return (rd<uint8_t>(0x14) & kStatusNeedsReset) != 0; }));
  EXPECT_GE(vm.irqs[2]->triggers.load(), 1);  // configuration change sent
  wr<uint8_t>(0x14, 0);
  EXPECT_EQ(rd<uint8_t>(0x14), 0);
  std::memset(ram.at(0x1000), 0, 0x1000);
  negotiate(features());
  setup_queue(0, q0, 0);
  wr<uint8_t>(0x14, kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk | kStatusDriverOk);
  DriverQueue fresh(ram, kSize, 0x1000);
  ram.put<uint32_t>(0x100000, kBlkTFlush);
  fresh.add_chain({{0x100000, 16, false}, {0x300000, 1, true}});
  wr<uint16_t>(kNotifyOffset, 0);
  ASSERT_TRUE(wait_for([&] { return fresh.used_idx() == 1; }));
  EXPECT_EQ(ram.get<uint8_t>(0x300000), kBlkSOk);
  EXPECT_EQ(rd<uint8_t>(0x14) & kStatusNeedsReset, 0);
}

TEST_F(PciFixture, PciCfgWindowReachesTheBar) {
  uint8_t cap = 0;
  for (uint8_t c = cfg<uint8_t>(0x34); c; c = cfg<uint8_t>(c + 1)) {
    if (cfg<uint8_t>(c) == 0x09 && cfg<uint8_t>(c + 3) == 5) cap = c;
  }
  ASSERT_NE(cap, 0);
  cfg_wr<uint8_t>(cap + 4, 0);
  cfg_wr<uint32_t>(cap + 8, 0x12);  // num_queues
  cfg_wr<uint32_t>(cap + 12, 2);
  EXPECT_EQ(cfg<uint32_t>(cap + 16) & 0xffff, 2u);
}

TEST(MakeVirtioBlk, RefusesBadOptionsAndNamesTheDisk) {
  TestRam ram(1 << 20);
  FakeVmServices vm;
  VirtioBlkOptions o{.read_only = false, .num_queues = 0, .queue_size = 128, .serial = "", .id = "d0"};
  auto r = make_virtio_blk({.path = "/nonexistent/x.img"}, o, VirtioTransport::Pci, {}, vm, ram.memory());
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().step, VirtioBlkSetupError::Step::BadOptions);
  o.num_queues = 1;
  o.queue_size = 100;
  r = make_virtio_blk({.path = "/nonexistent/x.img"}, o, VirtioTransport::Pci, {}, vm, ram.memory());
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().step, VirtioBlkSetupError::Step::BadOptions);
  o.queue_size = 128;
  r = make_virtio_blk({.path = "/nonexistent/x.img"}, o, VirtioTransport::Pci, {}, vm, ram.memory());
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().step, VirtioBlkSetupError::Step::OpenDisk);
  EXPECT_NE(r.error().message.find("d0"), std::string::npos);
  EXPECT_NE(r.error().message.find("/nonexistent/x.img"), std::string::npos);
}

}  // namespace
}  // namespace tern::devices

namespace tern::devices {
namespace {

TEST(VirtioPciClass, FollowsTheDeviceType) {
  EXPECT_EQ(virtio_pci_class(2), 0x0180);  // block: mass storage
  EXPECT_EQ(virtio_pci_class(1), 0x0200);  // net: ethernet
  EXPECT_EQ(virtio_pci_class(4), 0x00ff);  // entropy: unclassified
}

}  // namespace
}  // namespace tern::devices

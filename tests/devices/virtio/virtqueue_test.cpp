#include "devices/virtio/virtqueue.h"

#include <gtest/gtest.h>

#include "tests/devices/virtio/fakes.h"

namespace tern::devices {
namespace {

using testing::DriverQueue;
using testing::TestRam;

constexpr uint64_t kRam = 1 << 20;
constexpr uint16_t kSize = 8;

struct QueueFixture : ::testing::Test {
  TestRam ram{kRam};
  DriverQueue driver{ram, kSize, 0x1000};

  std::unique_ptr<Virtqueue> make(QueueFeatures f = {.event_idx = false, .indirect = true}) {
    auto q = Virtqueue::create(ram.memory(), driver.config(), f, 256);
    EXPECT_TRUE(q.has_value());
    return q ? std::move(*q) : nullptr;
  }
  std::optional<QueueFault> pop_fault(Virtqueue& q) {
    auto r = q.pop();
    EXPECT_FALSE(r.has_value());
    return r ? std::nullopt : std::optional<QueueFault>(r.error());
  }
};

TEST_F(QueueFixture, DirectChainBecomesValidatedBuffersAndReturnsOnce) {
  auto q = make();
  uint16_t head = driver.add_chain({{0x10000, 16, false}, {0x20000, 512, true}, {0x30000, 1, true}});
  {
    auto chain = q->pop();
    ASSERT_TRUE(chain.has_value());
    ASSERT_TRUE(chain->has_value());
    DescriptorChain c = std::move(**chain);
    ASSERT_EQ(c.buffers().size(), 3u);
    EXPECT_EQ(c.buffers()[0].bytes.data(), ram.at(0x10000));
    EXPECT_EQ(c.buffers()[0].bytes.size(), 16u);
    EXPECT_FALSE(c.buffers()[0].device_writable);
    EXPECT_TRUE(c.buffers()[1].device_writable);
    EXPECT_EQ(c.buffers()[2].bytes.data(), ram.at(0x30000));
    c.set_used_len(513);
    DescriptorChain moved = std::move(c);  // the moved-from object returns nothing
    EXPECT_EQ(driver.used_idx(), 0);
  }
  EXPECT_EQ(driver.used_idx(), 1);
  EXPECT_EQ(driver.used_elem(0), std::make_pair(uint32_t{head}, uint32_t{513}));
  auto empty = q->pop();
  ASSERT_TRUE(empty.has_value());
  EXPECT_FALSE(empty->has_value());
}

TEST_F(QueueFixture, IndirectChain) {
  auto q = make();
  driver.add_indirect({{0x10000, 16, false}, {0x20000, 4096, true}, {0x30000, 1, true}}, 0x8000);
  auto chain = q->pop();
  ASSERT_TRUE(chain.has_value() && chain->has_value());
  ASSERT_EQ((*chain)->buffers().size(), 3u);
  EXPECT_EQ((*chain)->buffers()[1].bytes.size(), 4096u);
  EXPECT_EQ((*chain)->buffers()[1].bytes.data(), ram.at(0x20000));
}

TEST_F(QueueFixture, EventIdxSuppressesAndRequestsNotifications) {
  auto q = make({.event_idx = true, .indirect = true});
  driver.add_chain({{0x30000, 1, true}});
  driver.add_chain({{0x30001, 1, true}});
  driver.set_used_event(1);  // interrupt me once used idx passes 1
  for (int i = 0; i < 2; ++i) {
    auto c = q->pop();
    ASSERT_TRUE(c.has_value() && c->has_value());
    if (i == 0) {
      c->reset();  // used idx 0 -> 1
      EXPECT_FALSE(q->needs_interrupt());  // 1 has not passed used_event 1
    }
  }  // second chain returned: used idx 2
  EXPECT_TRUE(q->needs_interrupt());
  EXPECT_FALSE(q->needs_interrupt());  // nothing new since
  EXPECT_FALSE(q->arm_notification());
  EXPECT_EQ(driver.avail_event(), 2);  // notify me when you publish entry 2
  driver.add_chain({{0x30002, 1, true}});
  EXPECT_TRUE(q->arm_notification());  // raced in: pop again
}

TEST_F(QueueFixture, NoInterruptFlagWithoutEventIdx) {
  auto q = make();
  driver.set_avail_flags(kVirtqAvailFNoInterrupt);
  driver.add_chain({{0x30000, 1, true}});
  { auto c = q->pop(); }
  EXPECT_FALSE(q->needs_interrupt());
  driver.set_avail_flags(0);
  driver.add_chain({{0x30000, 1, true}});
  { auto c = q->pop(); }
  EXPECT_TRUE(q->needs_interrupt());
}

TEST_F(QueueFixture, RingsOutsideRamOrMisalignedAreRefused) {
  QueueConfig c = driver.config();
  c.used_addr = kRam - 8;
  EXPECT_EQ(Virtqueue::create(ram.memory(), c, {}, 256).error(), QueueFault::RingOutOfRange);
  c = driver.config();
  c.desc_addr += 8;
  EXPECT_EQ(Virtqueue::create(ram.memory(), c, {}, 256).error(), QueueFault::RingMisaligned);
  c = driver.config();
  c.size = 6;
  EXPECT_EQ(Virtqueue::create(ram.memory(), c, {}, 256).error(), QueueFault::BadQueueSize);
  c.size = 512;
  EXPECT_EQ(Virtqueue::create(ram.memory(), c, {}, 256).error(), QueueFault::BadQueueSize);
}

TEST_F(QueueFixture, BufferOutsideRamBreaksTheQueue) {
  auto q = make();
  driver.add_chain({{0x10000, 16, false}, {kRam - 100, 512, true}});
  EXPECT_EQ(pop_fault(*q), QueueFault::BufferOutOfRange);
  EXPECT_TRUE(q->broken());
  EXPECT_EQ(pop_fault(*q), QueueFault::BufferOutOfRange);  // stays broken
  EXPECT_EQ(driver.used_idx(), 0);
}

TEST_F(QueueFixture, HugeAddressDoesNotWrap) {
  auto q = make();
  driver.add_chain({{~uint64_t{0} - 10, 100, true}});
  EXPECT_EQ(pop_fault(*q), QueueFault::BufferOutOfRange);
}

TEST_F(QueueFixture, LoopIsDetected) {
  auto q = make();
  driver.write_desc(0, 0x10000, 16, kVirtqDescFNext, 1);
  driver.write_desc(1, 0x10000, 16, kVirtqDescFNext, 0);
  driver.publish(0);
  EXPECT_EQ(pop_fault(*q), QueueFault::ChainTooLong);
}

TEST_F(QueueFixture, NextOutOfRange) {
  auto q = make();
  driver.write_desc(0, 0x10000, 16, kVirtqDescFNext, kSize);
  driver.publish(0);
  EXPECT_EQ(pop_fault(*q), QueueFault::NextOutOfRange);
}

TEST_F(QueueFixture, HeadOutOfRangeAndIdxJump) {
  auto q = make();
  driver.publish(kSize + 3);
  EXPECT_EQ(pop_fault(*q), QueueFault::HeadOutOfRange);
  auto q2 = make();
  driver.set_avail_idx(kSize + 1);
  EXPECT_EQ(pop_fault(*q2), QueueFault::AvailIdxJump);
}

TEST_F(QueueFixture, HeadPublishedTwiceWhileOwned) {
  auto q = make();
  uint16_t head = driver.add_chain({{0x30000, 1, true}});
  auto first = q->pop();
  ASSERT_TRUE(first.has_value() && first->has_value());
  driver.publish(head);
  EXPECT_EQ(pop_fault(*q), QueueFault::HeadInUse);
}

TEST_F(QueueFixture, IndirectLoopIsBoundedByTheTable) {
  auto q = make();
  DriverQueue::write_desc_at(ram, 0x8000, 0x10000, 16, kVirtqDescFNext, 1);
  DriverQueue::write_desc_at(ram, 0x8010, 0x10000, 16, kVirtqDescFNext, 0);
  driver.write_desc(0, 0x8000, 32, kVirtqDescFIndirect, 0);
  driver.publish(0);
  EXPECT_EQ(pop_fault(*q), QueueFault::ChainTooLong);
}

// 2.7.5.3.1: "A driver MUST NOT create a descriptor chain longer than the
// Queue Size of the device", indirect tables included. Before, a table of up
// to 32768 entries was taken whatever the queue size.
TEST_F(QueueFixture, IndirectTableLongerThanTheQueueIsRefused) {
  auto q = make();
  std::vector<DriverQueue::Buf> bufs(kSize + 1, {0x10000, 16, false});
  bufs.back() = {0x30000, 1, true};
  driver.add_indirect(bufs, 0x8000);
  EXPECT_EQ(pop_fault(*q), QueueFault::BadIndirectLength);
}

TEST_F(QueueFixture, DirectPlusIndirectLongerThanTheQueueIsRefused) {
  auto q = make();
  // Two direct descriptors, then an indirect table of kSize - 1 entries:
  // kSize + 1 descriptors in one chain.
  for (uint32_t i = 0; i < kSize - 1; ++i) {
    uint16_t flags = i + 2 < kSize ? kVirtqDescFNext : 0;
    DriverQueue::write_desc_at(ram, 0x8000 + 16 * i, 0x10000, 16, flags, static_cast<uint16_t>(i + 1));
  }
  driver.write_desc(0, 0x10000, 16, kVirtqDescFNext, 1);
  driver.write_desc(1, 0x10000, 16, kVirtqDescFNext, 2);
  driver.write_desc(2, 0x8000, 16 * (kSize - 1), kVirtqDescFIndirect, 0);
  driver.publish(0);
  EXPECT_EQ(pop_fault(*q), QueueFault::ChainTooLong);
}

TEST_F(QueueFixture, IndirectChainOfExactlyTheQueueSizeIsTaken) {
  auto q = make();
  std::vector<DriverQueue::Buf> bufs(kSize, {0x10000, 16, false});
  bufs.back() = {0x30000, 1, true};
  driver.add_indirect(bufs, 0x8000);
  auto chain = q->pop();
  ASSERT_TRUE(chain.has_value());
  ASSERT_TRUE(chain->has_value());
  EXPECT_EQ((*chain)->buffers().size(), kSize);
}

TEST_F(QueueFixture, NestedIndirectRefused) {
  auto q = make();
  DriverQueue::write_desc_at(ram, 0x8000, 0x9000, 16, kVirtqDescFIndirect, 0);
  driver.write_desc(0, 0x8000, 16, kVirtqDescFIndirect, 0);
  driver.publish(0);
  EXPECT_EQ(pop_fault(*q), QueueFault::NestedIndirect);
}

TEST_F(QueueFixture, BadIndirectLengths) {
  for (uint32_t len : {0u, 15u, 24u}) {
    auto q = make();
    driver.write_desc(0, 0x8000, len, kVirtqDescFIndirect, 0);
    driver.set_avail_idx(0);
    driver.publish(0);
    EXPECT_EQ(pop_fault(*q), QueueFault::BadIndirectLength) << len;
  }
}

TEST_F(QueueFixture, IndirectTableOutsideRamAndIndirectWithNext) {
  auto q = make();
  driver.write_desc(0, kRam - 16, 32, kVirtqDescFIndirect, 0);
  driver.publish(0);
  EXPECT_EQ(pop_fault(*q), QueueFault::IndirectOutOfRange);
  auto q2 = make();
  driver.write_desc(0, 0x8000, 32, kVirtqDescFIndirect | kVirtqDescFNext, 1);
  EXPECT_EQ(pop_fault(*q2), QueueFault::IndirectWithNext);
}

TEST_F(QueueFixture, IndirectWithoutFeatureRefused) {
  auto q = make({.event_idx = false, .indirect = false});
  driver.add_indirect({{0x30000, 1, true}}, 0x8000);
  EXPECT_EQ(pop_fault(*q), QueueFault::IndirectNotNegotiated);
}

TEST_F(QueueFixture, ReadableAfterWritableRefused) {
  auto q = make();
  driver.add_chain({{0x30000, 1, true}, {0x10000, 16, false}});
  EXPECT_EQ(pop_fault(*q), QueueFault::ReadableAfterWritable);
}

TEST_F(QueueFixture, DetachedQueueNoLongerWritesTheUsedRing) {
  auto q = make();
  driver.add_chain({{0x30000, 1, true}});
  auto c = q->pop();
  ASSERT_TRUE(c.has_value() && c->has_value());
  q->detach();
  c->reset();
  EXPECT_EQ(driver.used_idx(), 0);
  EXPECT_EQ(q->in_flight(), 0u);
}

// Random rings: whatever the guest writes, pop() returns chains inside RAM or
// a fault, and never reads or writes outside RAM (ASan checks the latter).
TEST(QueueFuzz, RandomRingsNeverEscapeRam) {
  constexpr uint64_t kSmallRam = 64 * 1024;
  TestRam ram(kSmallRam);
  uint64_t seed = 0x9e3779b97f4a7c15ull;
  auto next = [&] {
    seed ^= seed << 13;
    seed ^= seed >> 7;
    seed ^= seed << 17;
    return seed;
  };
  for (int round = 0; round < 500; ++round) {
    for (uint64_t i = 0; i < kSmallRam; i += 8) ram.put<uint64_t>(i, next());
    // Bias addresses and indices into plausible ranges so walks go deep.
    for (uint64_t d = 0x1000; d < 0x1000 + 16 * kSize; d += 16) {
      ram.put<uint64_t>(d, next() % (kSmallRam + 64));
      ram.put<uint32_t>(d + 8, static_cast<uint32_t>(next() % 128));
      ram.put<uint16_t>(d + 12, static_cast<uint16_t>(next() & 7));
      ram.put<uint16_t>(d + 14, static_cast<uint16_t>(next() % (kSize + 1)));
    }
    DriverQueue driver(ram, kSize, 0x1000);
    for (uint16_t i = 0; i < kSize; ++i) {
      ram.put<uint16_t>(0x1000 + 16 * kSize + 4 + 2 * i, static_cast<uint16_t>(next() % (kSize + 1)));
    }
    driver.set_avail_idx(static_cast<uint16_t>(next() % (kSize + 2)));
    auto q = Virtqueue::create(ram.memory(), driver.config(), {.event_idx = true, .indirect = true}, 256);
    ASSERT_TRUE(q.has_value());
    std::vector<DescriptorChain> held;
    for (int i = 0; i < 2 * kSize; ++i) {
      auto c = (*q)->pop();
      if (!c || !*c) break;
      for (const ChainBuffer& b : (*c)->buffers()) {
        ASSERT_GE(b.bytes.data(), ram.at(0));
        ASSERT_LE(b.bytes.data() + b.bytes.size(), ram.at(0) + kSmallRam);
      }
      held.push_back(std::move(**c));
    }
    (void)(*q)->needs_interrupt();
  }
}

}  // namespace
}  // namespace tern::devices

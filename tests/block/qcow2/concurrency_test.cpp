// Several threads, each with its own IoContext (as virtio queues have),
// writing and reading disjoint and overlapping ranges of one QCOW2 image.
// Labelled tsan too: CI runs it under ThreadSanitizer.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <future>
#include <cstring>
#include <random>
#include <thread>

#include "block/qcow2/create.h"
#include "block/qcow2/qcow2_disk.h"
#include "tests/block/qcow2/qcow2_test_util.h"

namespace tern::block::qcow2::test {
namespace {

constexpr uint64_t kBlock = 4096;
constexpr uint64_t kThreads = 4;
constexpr uint64_t kOwnBlocks = 96;     // per thread, disjoint
constexpr uint64_t kSharedBlocks = 64;  // written by every thread

// Block contents: a header naming the writer and block, repeated.
void fill(std::span<uint8_t> buf, uint64_t writer, uint64_t block, uint64_t round) {
  for (size_t i = 0; i < buf.size(); i += 8) {
    uint64_t word = (writer << 48) | (round << 32) | block;
    std::memcpy(buf.data() + i, &word, 8);
  }
}

// True when `buf` is entirely one fill() of `block` by some writer.
bool whole_block(std::span<const uint8_t> buf, uint64_t block, uint64_t* writer) {
  uint64_t first;
  std::memcpy(&first, buf.data(), 8);
  if ((first & 0xffffffff) != block) return false;
  for (size_t i = 8; i < buf.size(); i += 8) {
    if (std::memcmp(buf.data() + i, &first, 8) != 0) return false;
  }
  *writer = first >> 48;
  return true;
}

// Submits every request, then waits for all of them (out of order).
void run_batch(IoContext& ctx, std::vector<Request>& reqs) {
  for (auto& r : reqs) ASSERT_TRUE(ctx.submit(r).has_value());
  std::vector<Completion> out;
  ASSERT_TRUE(io::collect(ctx, reqs.size(), out).has_value());
  for (auto& c : out) ASSERT_TRUE(c.status.has_value()) << c.status.error().message();
}

void worker(DiskFile& disk, uint64_t id, uint32_t seed) {
  auto ctx = disk.make_io_context(16);
  ASSERT_TRUE(ctx.has_value());
  std::mt19937 rng(seed);
  const uint64_t own_base = kSharedBlocks + id * kOwnBlocks;
  // Aligned, so direct=on runs the Linux AIO path.
  std::vector<AlignedBuffer> aligned;
  for (int i = 0; i < 16; ++i) aligned.emplace_back(kBlock);
  std::vector<std::span<uint8_t>> bufs;
  for (auto& a : aligned) bufs.push_back(a.span());
  std::vector<iovec> iovs(16);
  for (uint64_t round = 1; round <= 6; ++round) {
    if (round == 3) {
      // Zero and discard some of our own blocks before this round rewrites some.
      Request z;
      z.op = Op::WriteZeroes;
      z.offset = (own_base + 10) * kBlock;
      z.length = 8 * kBlock;
      z.may_unmap = true;
      std::vector<Request> one{z};
      run_batch(**ctx, one);
      one[0].op = Op::Discard;
      one[0].offset = (own_base + 40) * kBlock;
      run_batch(**ctx, one);
    }
    // A batch of writes: most to our own blocks, some to shared ones.
    std::vector<Request> reqs;
    std::vector<uint64_t> used;
    std::vector<size_t> buf_of;  // reqs[k] uses bufs[buf_of[k]]
    for (size_t i = 0; i < 16; ++i) {
      uint64_t block = (i % 4 == 0) ? rng() % kSharedBlocks : own_base + rng() % kOwnBlocks;
      if (std::find(used.begin(), used.end(), block) != used.end()) continue;
      used.push_back(block);
      fill(bufs[i], id, block, round);
      iovs[i] = iovec{bufs[i].data(), kBlock};
      Request r;
      r.op = Op::Write;
      r.offset = block * kBlock;
      r.iov = std::span<const iovec>(&iovs[i], 1);
      r.cookie = block;
      reqs.push_back(r);
      buf_of.push_back(i);
    }
    run_batch(**ctx, reqs);
    // Read back every own block written in this batch.
    std::vector<Request> reads;
    for (size_t i = 0; i < reqs.size(); ++i) {
      uint64_t block = reqs[i].offset / kBlock;
      if (block < kSharedBlocks) continue;
      Request r = reqs[i];
      r.op = Op::Read;
      reads.push_back(r);
    }
    for (auto& b : bufs) std::fill(b.begin(), b.end(), 0);
    run_batch(**ctx, reads);
    for (size_t i = 0; i < reqs.size(); ++i) {
      uint64_t block = reqs[i].offset / kBlock;
      if (block < kSharedBlocks) continue;
      uint64_t writer = 0;
      ASSERT_TRUE(whole_block(bufs[buf_of[i]], block, &writer)) << "thread " << id << " block " << block;
      ASSERT_EQ(writer, id);
    }
  }
  Request flush;
  flush.op = Op::Flush;
  std::vector<Request> one{flush};
  run_batch(**ctx, one);
}

class Concurrency : public ::testing::TestWithParam<bool> {};

TEST_P(Concurrency, QueuesShareOneImage) {
  const bool direct = GetParam();
  TempDir dir;
  std::string img = dir.file("c.qcow2");
  CreateOptions c;
  c.path = img;
  c.size = (kSharedBlocks + kThreads * kOwnBlocks) * kBlock;
  c.cluster_size = 16384;  // several blocks per cluster: concurrent allocation
  ASSERT_TRUE(create_image(c).has_value());
  {
    auto disk = open_image(img, false, false, direct);
    ASSERT_NE(disk, nullptr);
    std::vector<std::jthread> threads;
    for (uint64_t t = 0; t < kThreads; ++t) {
      // Each thread plays one virtio queue driving its own context.
      threads.emplace_back([&disk, t] { worker(*disk, t, static_cast<uint32_t>(t + 1)); });
    }
    threads.clear();
    ASSERT_TRUE(disk->close().has_value());
    // Every shared block holds one writer's whole block or zeros.
    auto all = read_whole(*disk);
    for (uint64_t b = 0; b < kSharedBlocks; ++b) {
      std::vector<uint8_t> buf(all.begin() + static_cast<ptrdiff_t>(b * kBlock),
                               all.begin() + static_cast<ptrdiff_t>((b + 1) * kBlock));
      uint64_t writer = 0;
      bool zero = std::all_of(buf.begin(), buf.end(), [](uint8_t x) { return x == 0; });
      ASSERT_TRUE(zero || (whole_block(buf, b, &writer) && writer < kThreads)) << "shared block " << b;
    }
  }
  SH_OK("qemu-img check -q '" + img + "'");
}

INSTANTIATE_TEST_SUITE_P(Modes, Concurrency, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "direct" : "buffered"; });

// The shared side of the mapping lock, shown without timing: a test thread
// holds a shared section open (as another queue's lookup would) and waits
// for the main thread's requests; those that need no metadata change
// (reads of allocated clusters, an in-place write to an allocated COPIED
// cluster, a read that falls through to the raw backing file) complete
// meanwhile. Under one mutex they could not: the holder would give up after
// 30 s and the test fail.
TEST(SharedMapping, AllocatedClustersAreServedBesideAnOpenSharedSection) {
  TempDir dir;
  std::string base = dir.file("base.raw");
  std::string img = dir.file("top.qcow2");
  SH_OK("qemu-img create -q -f raw '" + base + "' 4M");
  SH_OK("qemu-io -f raw -c 'write -P 0x11 0 4M' '" + base + "'");
  SH_OK("qemu-img create -q -f qcow2 -b base.raw -F raw '" + img + "' 4M");
  SH_OK("qemu-io -f qcow2 -c 'write -P 0x22 0 1M' '" + img + "'");
  auto disk = open_image(img);
  ASSERT_NE(disk, nullptr);
  auto* qcow2 = dynamic_cast<Qcow2Disk*>(disk.get());
  ASSERT_NE(qcow2, nullptr);
  auto ctx = disk->make_io_context(4);
  ASSERT_TRUE(ctx.has_value());
  std::vector<uint8_t> buf(4096);
  // The first read loads the L2 table (exclusive); later ones find it cached.
  ASSERT_TRUE(pread_disk(**ctx, 0, buf).has_value());

  std::promise<void> entered, served;
  std::future<void> served_future = served.get_future();
  bool released_by_requests = false;
  std::jthread holder([&] {  // holds the shared side until the requests are served
    qcow2->with_engine_shared([&](Engine&) {
      entered.set_value();
      released_by_requests = served_future.wait_for(std::chrono::seconds(30)) == std::future_status::ready;
      return 0;
    });
  });
  entered.get_future().wait();
  auto r1 = pread_disk(**ctx, 512 * 1024, buf);
  bool read_ok = r1.has_value() && std::all_of(buf.begin(), buf.end(), [](uint8_t b) { return b == 0x22; });
  std::vector<uint8_t> data(4096, 0x33);
  auto w = pwrite_disk(**ctx, 64 * 1024, data);
  auto r2 = pread_disk(**ctx, 3 * 1024 * 1024, buf);  // unallocated in the overlay: the raw backing file
  bool backing_ok = r2.has_value() && std::all_of(buf.begin(), buf.end(), [](uint8_t b) { return b == 0x11; });
  served.set_value();
  holder.join();
  EXPECT_TRUE(released_by_requests) << "the requests waited for the shared section to end";
  EXPECT_TRUE(read_ok) << (r1 ? "wrong data" : r1.error().message());
  EXPECT_TRUE(w.has_value()) << w.error().message();
  EXPECT_TRUE(backing_ok) << (r2 ? "wrong data" : r2.error().message());
  ASSERT_TRUE(pread_disk(**ctx, 64 * 1024, buf).has_value());
  EXPECT_EQ(buf, data);
  ctx->reset();
  ASSERT_TRUE(disk->close().has_value());
  disk.reset();  // and its image lock
  SH_OK("qemu-img check -q '" + img + "'");
  SH_OK("qemu-io -f qcow2 -r -c 'read -P 0x33 64k 4k' -c 'read -P 0x22 68k 956k' -c 'read -P 0x11 1M 3M' '" + img + "'");
}

}  // namespace
}  // namespace tern::block::qcow2::test

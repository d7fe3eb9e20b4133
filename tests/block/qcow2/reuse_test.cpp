// A cluster freed while a data transfer to it may still be in flight must
// not be handed out again until that transfer is over (issue 12, item 1).
// The sequence: WRITE 64 KiB to an allocated guest cluster G, its data
// shaped like an L2 table; DISCARD G; WRITE 512 B where no L2 table exists
// yet; FLUSH, all in flight together. If the new L2 table lands on G's old
// host cluster, the late data write overwrites it and the guest then reads
// whatever the fake entries point at (here: the refcount table).
#include <gtest/gtest.h>

#include <cstring>

#include "block/qcow2/big_endian.h"
#include "block/qcow2/format.h"
#include "block/qcow2/qcow2_disk.h"
#include "tests/block/qcow2/qcow2_test_util.h"

namespace tern::block::qcow2::test {
namespace {

constexpr uint64_t kCluster = 64 << 10;
constexpr uint64_t kG = 1 << 20;                // guest cluster G
constexpr uint64_t kFar = 512ull << 20;         // the next L2 table's range
constexpr uint64_t kRefcountTable = 0x10000;    // where qemu-img puts it

struct Params {
  bool direct;
  uint32_t queues;
};

std::string name_of(const testing::TestParamInfo<Params>& info) {
  return std::string(info.param.direct ? "Direct" : "Buffered") + std::to_string(info.param.queues) + "Queues";
}

// Submits `reqs` on `ctx`, no waiting.
void submit_all(IoContext& ctx, std::vector<Request>& reqs) {
  for (auto& r : reqs) ASSERT_TRUE(ctx.submit(r).has_value()) << "cookie " << r.cookie;
}

// Waits (on the completion eventfd) until `count` requests completed on ctx.
void wait_all(IoContext& ctx, size_t count) {
  std::vector<Completion> out;
  ASSERT_TRUE(io::collect(ctx, count, out).has_value());
  for (auto& c : out) EXPECT_TRUE(c.status.has_value()) << c.cookie << ": " << c.status.error().message();
}

class FreedClusterReuse : public testing::TestWithParam<Params> {};

TEST_P(FreedClusterReuse, LateWriteNeverLandsOnANewL2Table) {
  const Params p = GetParam();
  TempDir dir;
  std::string img = dir.file("g.qcow2");
  SH_OK("qemu-img create -q -f qcow2 -o cluster_size=65536 '" + img + "' 1G");
  {
    auto disk = open_image(img, false, false, p.direct);
    ASSERT_NE(disk, nullptr);
    auto a = disk->make_io_context(16);
    ASSERT_TRUE(a.has_value());
    auto b = p.queues > 1 ? disk->make_io_context(16) : Result<std::unique_ptr<IoContext>>(nullptr);
    ASSERT_TRUE(b.has_value());
    IoContext& qa = **a;
    IoContext& qb = p.queues > 1 ? **b : qa;

    // G is allocated (its L2 table and data cluster exist).
    AlignedBuffer first(kCluster);
    std::memset(first.data(), 0x11, kCluster);
    ASSERT_TRUE(pwrite_disk(qa, kG, first.span()).has_value());
    ASSERT_TRUE(simple_op(qa, Op::Flush).has_value());

    // Data shaped like an L2 table whose entries point at the refcount table.
    AlignedBuffer fake(kCluster);
    for (uint64_t i = 0; i < kCluster / 8; ++i) {
      store_be<uint64_t>(fake.data() + i * 8, kRefcountTable | kOflagCopied);
    }
    AlignedBuffer small(512);
    std::memset(small.data(), 0x5a, 512);
    iovec fake_iov{fake.data(), kCluster};
    iovec small_iov{small.data(), 512};

    std::vector<Request> on_a(1);
    on_a[0].op = Op::Write;
    on_a[0].offset = kG;
    on_a[0].iov = std::span<const iovec>(&fake_iov, 1);
    on_a[0].cookie = 1;
    std::vector<Request> on_b(3);
    on_b[0].op = Op::Discard;
    on_b[0].offset = kG;
    on_b[0].length = kCluster;
    on_b[0].cookie = 2;
    on_b[1].op = Op::Write;
    on_b[1].offset = kFar;
    on_b[1].iov = std::span<const iovec>(&small_iov, 1);
    on_b[1].cookie = 3;
    on_b[2].op = Op::Flush;
    on_b[2].cookie = 4;
    // Published together: nothing drained until everything is submitted.
    submit_all(qa, on_a);
    submit_all(qb, on_b);
    if (p.queues > 1) {
      wait_all(qb, on_b.size());
      wait_all(qa, on_a.size());
    } else {
      wait_all(qa, on_a.size() + on_b.size());
    }

    AlignedBuffer back(512);
    ASSERT_TRUE(pread_disk(qa, kFar, back.span()).has_value());
    EXPECT_EQ(std::memcmp(back.data(), small.data(), 512), 0) << "guest reads something else at 512 MiB";
    a->reset();
    if (b.has_value()) b->reset();
    ASSERT_TRUE(disk->close().has_value());
  }
  // After reopening: the 512 B are there, and the image is clean.
  {
    auto disk = open_image(img, true, false, false);
    ASSERT_NE(disk, nullptr);
    auto ctx = disk->make_io_context(4);
    ASSERT_TRUE(ctx.has_value());
    AlignedBuffer back(512);
    ASSERT_TRUE(pread_disk(**ctx, kFar, back.span()).has_value());
    std::vector<uint8_t> want(512, 0x5a);
    EXPECT_EQ(std::memcmp(back.data(), want.data(), 512), 0)
        << "after reopen the guest reads " << std::hex << load_be<uint64_t>(back.data())
        << "... at 512 MiB (the refcount table?) instead of its data";
    AlignedBuffer g(kCluster);
    ASSERT_TRUE(pread_disk(**ctx, kG, g.span()).has_value());
    std::vector<uint8_t> zeros(kCluster, 0);
    EXPECT_EQ(std::memcmp(g.data(), zeros.data(), kCluster), 0) << "discarded G does not read zeros";
  }
  std::string out;
  EXPECT_EQ(sh("qemu-img check '" + img + "'", &out), 0) << out;
}

INSTANTIATE_TEST_SUITE_P(Queues, FreedClusterReuse,
                         testing::Values(Params{true, 1}, Params{true, 2}, Params{false, 1},
                                         Params{false, 2}),
                         name_of);

// The buffered (direct=off) case of another queue that has mapped its
// write under the lock and is transferring it outside the lock when this
// queue discards and allocates: the interleaving is made deterministic by
// doing queue A's steps by hand, as Qcow2IoContext does them.
TEST(FreedClusterReuse, OtherQueueMidTransferBuffered) {
  TempDir dir;
  std::string img = dir.file("m.qcow2");
  SH_OK("qemu-img create -q -f qcow2 -o cluster_size=65536 '" + img + "' 1G");
  {
    OpenOptions o;
    o.path = img;
    auto opened = Qcow2Disk::open(o);
    ASSERT_TRUE(opened.has_value()) << opened.error().message();
    Qcow2Disk& disk = **opened;
    auto b = disk.make_io_context(16);
    ASSERT_TRUE(b.has_value());
    std::vector<uint8_t> first(kCluster, 0x11);
    ASSERT_TRUE(pwrite_disk(**b, kG, first).has_value());

    std::vector<uint8_t> fake(kCluster);
    for (uint64_t i = 0; i < kCluster / 8; ++i) {
      store_be<uint64_t>(fake.data() + i * 8, kRefcountTable | kOflagCopied);
    }
    iovec fake_iov{fake.data(), kCluster};
    // Queue A: mapped under the lock, transfer not yet done.
    std::vector<HostExtent> extents;
    auto ticket = disk.with_engine([&](Engine& e) -> Result<TransferTicket> {
      if (auto r = e.write(kG, std::span<const iovec>(&fake_iov, 1), &extents); !r) {
        return std::unexpected(r.error());
      }
      return e.transfers().begin();
    });
    ASSERT_TRUE(ticket.has_value());
    ASSERT_EQ(extents.size(), 1u);
    // Queue B meanwhile.
    ASSERT_TRUE(simple_op(**b, Op::Discard, kG, kCluster).has_value());
    std::vector<uint8_t> small(512, 0x5a);
    ASSERT_TRUE(pwrite_disk(**b, kFar, small).has_value());
    ASSERT_TRUE(simple_op(**b, Op::Flush).has_value());
    // Queue A's transfer lands now.
    ASSERT_EQ(::pwrite(disk.buffered_fd(), fake.data(), kCluster, static_cast<off_t>(extents[0].host_offset)),
              static_cast<ssize_t>(kCluster));
    EXPECT_GT(disk.with_engine([](Engine& e) { return e.held_clusters(); }), 0u)
        << "G's old cluster should be held while queue A's transfer is out";
    disk.transfers().end(*ticket);
    // Once it is back, the next allocation returns the held cluster to use.
    ASSERT_TRUE(pwrite_disk(**b, 2 * kG, small).has_value());
    EXPECT_EQ(disk.with_engine([](Engine& e) { return e.held_clusters(); }), 0u);
    b->reset();
    ASSERT_TRUE(disk.close().has_value());
  }
  {
    auto disk = open_image(img, true, false, false);
    ASSERT_NE(disk, nullptr);
    auto ctx = disk->make_io_context(4);
    ASSERT_TRUE(ctx.has_value());
    std::vector<uint8_t> back(512);
    ASSERT_TRUE(pread_disk(**ctx, kFar, back).has_value());
    EXPECT_EQ(back, std::vector<uint8_t>(512, 0x5a)) << "after reopen the guest reads " << std::hex
                                                     << load_be<uint64_t>(back.data()) << "... at 512 MiB";
  }
  std::string out;
  EXPECT_EQ(sh("qemu-img check '" + img + "'", &out), 0) << out;
}

}  // namespace
}  // namespace tern::block::qcow2::test

// parse_blk_request on its own: every rule a request can break gives its
// own rejection and status; valid requests come out as the backend's
// request or as the device's own answer.
#include "devices/virtio/blk/request.h"

#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

namespace tern::devices {
namespace {

// A chain under construction: a 16-byte header, then data, then a status
// byte, each in buffers of its own.
struct Chain {
  std::vector<std::vector<uint8_t>> storage;
  std::vector<ChainBuffer> buffers;

  Chain& add(std::vector<uint8_t> bytes, bool writable) {
    storage.reserve(64);  // stable addresses: spans point into storage
    storage.push_back(std::move(bytes));
    buffers.push_back(ChainBuffer{std::span<uint8_t>(storage.back()), writable});
    return *this;
  }
  Chain& header(uint32_t type, uint64_t sector) {
    std::vector<uint8_t> h(16);
    std::memcpy(h.data(), &type, 4);
    std::memcpy(h.data() + 8, &sector, 8);
    return add(std::move(h), false);
  }
  Chain& segment(uint64_t sector, uint32_t num, uint32_t flags) {
    std::vector<uint8_t> s(16);
    std::memcpy(s.data(), &sector, 8);
    std::memcpy(s.data() + 8, &num, 4);
    std::memcpy(s.data() + 12, &flags, 4);
    return add(std::move(s), false);
  }
  Chain& data(size_t n, bool writable) { return add(std::vector<uint8_t>(n), writable); }
  Chain& status() { return add(std::vector<uint8_t>(1, 0xff), true); }
};

BlkParseLimits limits() {
  BlkParseLimits l;
  l.capacity_sectors = 2048;  // 1 MiB
  l.seg_max = 4;
  l.max_discard_sectors = 64;
  l.max_write_zeroes_sectors = 64;
  l.features = kBlkFDiscard | kBlkFWriteZeroes;
  return l;
}

BlkParsed parse(const Chain& c, const BlkParseLimits& l = limits()) {
  static std::vector<iovec> iov;
  return parse_blk_request(c.buffers, l, "serial-1", 7, iov);
}

void expect_rejected(const Chain& c, BlkRejection why, uint8_t status, const BlkParseLimits& l = limits()) {
  BlkParsed p = parse(c, l);
  ASSERT_TRUE(std::holds_alternative<BlkRejection>(p)) << blk_rejection_name(why);
  EXPECT_EQ(std::get<BlkRejection>(p), why) << blk_rejection_name(std::get<BlkRejection>(p));
  EXPECT_EQ(blk_rejection_status(why), status) << blk_rejection_name(why);
}

TEST(BlkRequestParse, ReadsAndWritesGoToTheBackendWithTheirData) {
  Chain read;
  read.header(kBlkTIn, 8).data(512, true).data(3584, true).status();
  BlkParsed p = parse(read);
  ASSERT_TRUE(std::holds_alternative<BlkBackendRequest>(p));
  auto& r = std::get<BlkBackendRequest>(p);
  EXPECT_EQ(r.request.op, block::Op::Read);
  EXPECT_EQ(r.request.offset, 8u * 512);
  EXPECT_EQ(r.request.cookie, 7u);
  EXPECT_EQ(r.request.iov.size(), 2u);
  EXPECT_EQ(r.bytes, 4096u);
  EXPECT_EQ(r.read_len, 4096u);

  Chain write;
  write.header(kBlkTOut, 2047).data(512, false).status();
  p = parse(write);
  ASSERT_TRUE(std::holds_alternative<BlkBackendRequest>(p));
  EXPECT_EQ(std::get<BlkBackendRequest>(p).request.op, block::Op::Write);
  EXPECT_EQ(std::get<BlkBackendRequest>(p).read_len, 0u);

  Chain flush;
  flush.header(kBlkTFlush, 0).status();
  p = parse(flush);
  ASSERT_TRUE(std::holds_alternative<BlkBackendRequest>(p));
  EXPECT_EQ(std::get<BlkBackendRequest>(p).request.op, block::Op::Flush);
}

TEST(BlkRequestParse, GetIdAndAReadOnlyFlushAreAnsweredByTheDevice) {
  Chain id;
  id.header(kBlkTGetId, 0).data(20, true).status();
  BlkParsed p = parse(id);
  ASSERT_TRUE(std::holds_alternative<BlkAnswer>(p));
  EXPECT_EQ(std::get<BlkAnswer>(p).written, 20u);
  EXPECT_EQ(std::string(reinterpret_cast<char*>(id.storage[1].data()), 8), "serial-1");

  BlkParseLimits ro = limits();
  ro.read_only = true;
  Chain flush;
  flush.header(kBlkTFlush, 0).status();
  p = parse(flush, ro);
  ASSERT_TRUE(std::holds_alternative<BlkAnswer>(p));
  EXPECT_TRUE(std::get<BlkAnswer>(p).flush);
}

TEST(BlkRequestParse, DiscardAndWriteZeroesCarryTheirSegment) {
  Chain wz;
  wz.header(kBlkTWriteZeroes, 0).segment(100, 8, 1).status();
  BlkParsed p = parse(wz);
  ASSERT_TRUE(std::holds_alternative<BlkBackendRequest>(p));
  auto& r = std::get<BlkBackendRequest>(p).request;
  EXPECT_EQ(r.op, block::Op::WriteZeroes);
  EXPECT_EQ(r.offset, 100u * 512);
  EXPECT_EQ(r.length, 8u * 512);
  EXPECT_TRUE(r.may_unmap);
}

// One chain per rule, each breaking only that rule.
TEST(BlkRequestParse, EachRuleHasItsOwnRejectionAndStatus) {
  {
    Chain c;
    c.header(kBlkTIn, 0).data(512, false);
    expect_rejected(c, BlkRejection::no_status_byte, kBlkSIoErr);
  }
  {
    Chain c;
    c.header(kBlkTIn, 0);
    for (int i = 0; i < 5; ++i) c.data(512, true);  // seg_max 4
    c.status();
    expect_rejected(c, BlkRejection::beyond_seg_limits, kBlkSIoErr);
  }
  {
    Chain c;
    c.add(std::vector<uint8_t>(8), false).status();
    expect_rejected(c, BlkRejection::short_header, kBlkSIoErr);
  }
  {
    Chain c;
    c.header(kBlkTIn, 0).data(511, true).status();
    expect_rejected(c, BlkRejection::unaligned_data, kBlkSIoErr);
  }
  {
    BlkParseLimits one = limits();
    one.seg_max = 1;
    one.capacity_sectors = 1 << 30;
    Chain c;
    c.header(kBlkTIn, 0).data(kBlkSizeMax, true).data(512, true).status();  // 4 buffers > seg_max + 2
    expect_rejected(c, BlkRejection::beyond_seg_limits, kBlkSIoErr, one);
  }
  {
    Chain c;
    c.header(kBlkTIn, 2047).data(1024, true).status();
    expect_rejected(c, BlkRejection::past_capacity, kBlkSIoErr);
  }
  {
    BlkParseLimits ro = limits();
    ro.read_only = true;
    Chain w;
    w.header(kBlkTOut, 0).data(512, false).status();
    expect_rejected(w, BlkRejection::read_only, kBlkSIoErr, ro);
    Chain d;
    d.header(kBlkTDiscard, 0).segment(0, 8, 0).status();
    expect_rejected(d, BlkRejection::read_only, kBlkSIoErr, ro);
  }
  {
    Chain c;
    c.header(kBlkTDiscard, 0).data(32, false).status();
    expect_rejected(c, BlkRejection::bad_segment, kBlkSIoErr);
  }
  {
    Chain c;
    c.header(kBlkTDiscard, 0).segment(0, 65, 0).status();
    expect_rejected(c, BlkRejection::too_many_sectors, kBlkSIoErr);
  }
  {
    Chain c;
    c.header(kBlkTDiscard, 0).segment(2047, 8, 0).status();
    expect_rejected(c, BlkRejection::past_capacity, kBlkSIoErr);
  }
  {
    Chain c;
    c.header(99, 0).status();
    expect_rejected(c, BlkRejection::unsupported_type, kBlkSUnsupp);
  }
  {
    BlkParseLimits none = limits();
    none.features = 0;
    Chain c;
    c.header(kBlkTWriteZeroes, 0).segment(0, 8, 0).status();
    expect_rejected(c, BlkRejection::not_offered, kBlkSUnsupp, none);
  }
  {
    Chain unmap, unknown;
    unmap.header(kBlkTDiscard, 0).segment(0, 8, 1).status();
    expect_rejected(unmap, BlkRejection::unsupported_flags, kBlkSUnsupp);
    unknown.header(kBlkTWriteZeroes, 0).segment(0, 8, 2).status();
    expect_rejected(unknown, BlkRejection::unsupported_flags, kBlkSUnsupp);
  }
}

// A request longer than seg_max x size_max in few, large buffers.
TEST(BlkRequestParse, DataPastTheRequestSizeLimitIsTooLarge) {
  BlkParseLimits l = limits();
  l.seg_max = 1;
  l.capacity_sectors = 1 << 30;
  Chain c;
  // Three buffers (header, data, data and status) are within seg_max + 2,
  // each within size_max, but the data is 512 bytes past 1 x size_max.
  c.header(kBlkTIn, 0).data(kBlkSizeMax, true).add(std::vector<uint8_t>(513), true);
  expect_rejected(c, BlkRejection::too_large, kBlkSIoErr, l);
}

TEST(BlkRequestParse, EveryRejectionHasACounter) {
  AtomicBlockCounters counters;
  for (int i = 0; i <= static_cast<int>(BlkRejection::unsupported_flags); ++i) {
    auto why = static_cast<BlkRejection>(i);
    blk_rejection_counter(counters, why).fetch_add(1);
    EXPECT_NE(std::string(blk_rejection_name(why)), "");
  }
  EXPECT_EQ(counters.rejected_no_status_byte.load(), 1u);
  EXPECT_EQ(counters.rejected_unsupported_flags.load(), 1u);
  EXPECT_EQ(counters.rejected_past_capacity.load(), 1u);
}

}  // namespace
}  // namespace tern::devices

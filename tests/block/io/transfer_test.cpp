// The block layer's one transfer loop, its AIO ring and its wait helper,
// on their own: what every backend, the converter and tern-img rely on.
#include "block/io/transfer.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <climits>
#include <cstdlib>
#include <numeric>
#include <string>
#include <vector>

#include "base/unique_fd.h"
#include "block/io/aio.h"
#include "block/io/iov.h"
#include "block/io/wait.h"
#include "block/open.h"

namespace tern::block::io {
namespace {

class TempFile {
 public:
  TempFile() {
    const char* dir = std::getenv("TMPDIR");
    path_ = std::string(dir ? dir : "/tmp") + "/tern-io-XXXXXX";
    int fd = ::mkstemp(path_.data());
    if (fd < 0) std::abort();
    fd_.reset(fd);
  }
  ~TempFile() { ::unlink(path_.c_str()); }
  int fd() const { return fd_.get(); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  UniqueFd fd_;
};

std::vector<uint8_t> counting(size_t n) {
  std::vector<uint8_t> v(n);
  std::iota(v.begin(), v.end(), uint8_t{1});
  return v;
}

// More segments than one preadv/pwritev takes (IOV_MAX), some of them
// empty: the loop goes on where each call stopped.
TEST(TransferAll, MovesListsLongerThanIovMaxWithEmptySegments) {
  TempFile f;
  constexpr size_t kSegments = IOV_MAX * 2 + 7;
  std::vector<uint8_t> data = counting(kSegments * 3);
  std::vector<iovec> iov;
  for (size_t i = 0; i < kSegments; ++i) {
    iov.push_back(iovec{data.data() + i * 3, 3});
    if (i % 100 == 0) iov.push_back(iovec{data.data(), 0});
  }
  auto wrote = transfer_all(f.fd(), Direction::Write, iov, 4096);
  ASSERT_TRUE(wrote.has_value()) << wrote.error().message();
  EXPECT_EQ(*wrote, data.size());

  std::vector<uint8_t> back(data.size());
  std::vector<iovec> rev;
  for (size_t i = 0; i < kSegments; ++i) rev.push_back(iovec{back.data() + i * 3, 3});
  auto read = transfer_all(f.fd(), Direction::Read, rev, 4096);
  ASSERT_TRUE(read.has_value()) << read.error().message();
  EXPECT_EQ(*read, data.size());
  EXPECT_EQ(back, data);
}

// A read past the end of the file returns what there was; the zero-filling
// form clears the rest of the caller's buffers.
TEST(TransferAll, ReadsStopAtEndOfFileAndZeroFillingClearsTheRest) {
  TempFile f;
  std::vector<uint8_t> data = counting(1000);
  ASSERT_TRUE(write_all(f.fd(), data, 0).has_value());
  std::vector<uint8_t> a(600, 0xee), b(600, 0xee);
  iovec v[2] = {{a.data(), a.size()}, {b.data(), b.size()}};
  auto read = transfer_all(f.fd(), Direction::Read, v, 0);
  ASSERT_TRUE(read.has_value());
  EXPECT_EQ(*read, 1000u);

  std::fill(b.begin(), b.end(), 0xee);
  ASSERT_TRUE(read_zero_filled(f.fd(), std::span<const iovec>(v, 2), 0).has_value());
  EXPECT_TRUE(std::equal(a.begin(), a.end(), data.begin()));
  EXPECT_TRUE(std::equal(b.begin(), b.begin() + 400, data.begin() + 600));
  EXPECT_TRUE(std::all_of(b.begin() + 400, b.end(), [](uint8_t x) { return x == 0; }));
}

TEST(TransferAll, FailuresCarryTheirDirectionAndErrno) {
  std::vector<uint8_t> buf(16);
  iovec v{buf.data(), buf.size()};
  auto r = transfer_all(-1, Direction::Read, std::span<const iovec>(&v, 1), 0);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, Errc::ReadFailed);
  EXPECT_EQ(r.error().sys_errno, EBADF);
  auto w = write_all(-1, buf, 0);
  ASSERT_FALSE(w.has_value());
  EXPECT_EQ(w.error().code, Errc::WriteFailed);
  auto s = sync_file(-1);
  ASSERT_FALSE(s.has_value());
  EXPECT_EQ(s.error().code, Errc::FlushFailed);
}

// The ring announces completions on the eventfd given to each request and
// hands back the caller's data.
TEST(AioRing, SubmitsReadsAndWritesAndReapsThemWithTheirData) {
  TempFile f;
  auto ring = AioRing::create(4);
  ASSERT_TRUE(ring.has_value()) << ring.error().message();
  UniqueFd event(::eventfd(0, EFD_CLOEXEC));
  ASSERT_TRUE(event);
  std::vector<uint8_t> data = counting(8192);
  iovec out{data.data(), data.size()};
  iocb cb{};
  AioRing::prepare_rw(cb, Direction::Write, f.fd(), std::span<const iovec>(&out, 1), 0, event.get(), 77);
  iocb* list[1] = {&cb};
  auto taken = ring->submit(list);
  ASSERT_TRUE(taken.has_value()) << taken.error().message();
  EXPECT_EQ(*taken, 1u);
  io_event ev[4];
  ASSERT_EQ(ring->wait(ev), 1);
  EXPECT_EQ(ev[0].data, 77u);
  EXPECT_EQ(ev[0].res, 8192);
  uint64_t announced = 0;
  ASSERT_EQ(::read(event.get(), &announced, 8), 8);
  EXPECT_EQ(announced, 1u);

  std::vector<uint8_t> back(8192);
  iovec in{back.data(), back.size()};
  AioRing::prepare_rw(cb, Direction::Read, f.fd(), std::span<const iovec>(&in, 1), 0, event.get(), 78);
  ASSERT_TRUE(ring->submit(list).has_value());
  long n = ring->wait(ev);
  ASSERT_EQ(n, 1);
  EXPECT_EQ(ev[0].data, 78u);
  EXPECT_EQ(back, data);
  EXPECT_EQ(ring->reap(ev), 0u);  // nothing left
}

// run_to_completion() on a real context: the status of the one request.
TEST(Wait, RunToCompletionReturnsTheRequestsStatus) {
  TempFile f;
  ASSERT_EQ(::ftruncate(f.fd(), 1 << 20), 0);
  OpenOptions o;
  o.path = f.path();
  o.type = ImageType::Raw;
  o.lock = false;
  auto disk = open_disk(o);
  ASSERT_TRUE(disk.has_value()) << disk.error().message();
  auto ctx = (*disk)->make_io_context(4);
  ASSERT_TRUE(ctx.has_value());
  std::vector<uint8_t> buf(4096, 0x5a);
  iovec v{buf.data(), buf.size()};
  Request r;
  r.op = Op::Write;
  r.offset = 8192;
  r.iov = std::span<const iovec>(&v, 1);
  EXPECT_TRUE(run_to_completion(**ctx, r).has_value());
  r.offset = 1 << 20;  // past the end
  auto past = run_to_completion(**ctx, r);
  ASSERT_FALSE(past.has_value());
  EXPECT_EQ(past.error().code, Errc::OutOfRange);
  std::vector<Completion> none;
  auto waited = collect(**ctx, 1, none, 0);
  ASSERT_TRUE(waited.has_value());
  EXPECT_FALSE(*waited);  // nothing in flight: the wait times out
}

}  // namespace
}  // namespace tern::block::io

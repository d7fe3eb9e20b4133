// The raw backends (Sync, Native AIO, Threads) through the disk interface,
// with and without O_DIRECT.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "block/io/wait.h"
#include "block/open.h"

namespace tern::block {
namespace {

struct AlignedFree {
  void operator()(uint8_t* p) const { std::free(p); }
};
using Buf = std::unique_ptr<uint8_t, AlignedFree>;
Buf buffer(size_t size, uint8_t fill) {
  Buf b(static_cast<uint8_t*>(std::aligned_alloc(4096, size)));
  std::memset(b.get(), fill, size);
  return b;
}

std::string temp_dir() {
  char tmpl[] = "/var/tmp/tern-raw-XXXXXX";  // /var/tmp: a disk filesystem where O_DIRECT works
  if (!mkdtemp(tmpl)) std::abort();
  return tmpl;
}

void make_file(const std::string& path, uint64_t size) {
  int fd = ::open(path.c_str(), O_CREAT | O_RDWR | O_TRUNC | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::ftruncate(fd, static_cast<off_t>(size)), 0);
  ::close(fd);
}

// Waits for and collects completions until `count` arrived.
std::vector<Completion> wait_for(IoContext& ctx, size_t count) {
  std::vector<Completion> done;
  (void)io::collect(ctx, count, done, 5000);  // the caller checks the count
  return done;
}

Result<void> run_one(IoContext& ctx, const Request& r) {
  if (auto s = ctx.submit(r); !s) return s;
  auto done = wait_for(ctx, 1);
  if (done.size() != 1) return fail(Errc::Internal, 0, "no completion");
  EXPECT_EQ(done[0].cookie, r.cookie);
  return done[0].status;
}

Result<void> rw(IoContext& ctx, Op op, uint64_t offset, uint8_t* data, size_t len) {
  iovec v{data, len};
  return run_one(ctx, Request{.op = op, .offset = offset, .iov = {&v, 1}, .cookie = offset + 7});
}

struct Mode {
  AioMode aio;
  bool direct;
};

class RawBackend : public ::testing::TestWithParam<Mode> {
 protected:
  void SetUp() override {
    dir = temp_dir();
    path = dir + "/disk.img";
    make_file(path, 4 << 20);
  }
  void TearDown() override { std::filesystem::remove_all(dir); }
  std::unique_ptr<DiskFile> open(bool read_only = false) {
    auto disk = open_disk(OpenOptions{.path = path, .type = ImageType::Raw, .read_only = read_only,
                                      .direct = GetParam().direct, .aio = GetParam().aio});
    EXPECT_TRUE(disk.has_value()) << disk.error().message();
    return disk ? std::move(*disk) : nullptr;
  }
  std::string dir, path;
};

TEST_P(RawBackend, WriteReadFlushRoundTrip) {
  auto disk = open();
  ASSERT_TRUE(disk);
  EXPECT_EQ(disk->format_name(), "raw");
  EXPECT_EQ(disk->size(), 4u << 20);
  auto ctx = disk->make_io_context(8);
  ASSERT_TRUE(ctx.has_value());
  Buf w = buffer(8192, 0x5a), r = buffer(8192, 0);
  ASSERT_TRUE(rw(**ctx, Op::Write, 4096, w.get(), 8192));
  ASSERT_TRUE(run_one(**ctx, Request{.op = Op::Flush, .cookie = 1}));
  ASSERT_TRUE(rw(**ctx, Op::Read, 4096, r.get(), 8192));
  EXPECT_EQ(std::memcmp(w.get(), r.get(), 8192), 0);
}

TEST_P(RawBackend, VectoredRequestsSpanSeveralBuffers) {
  auto disk = open();
  auto ctx = disk->make_io_context(4);
  ASSERT_TRUE(ctx.has_value());
  Buf a = buffer(4096, 1), b = buffer(8192, 2);
  iovec w[2] = {{a.get(), 4096}, {b.get(), 8192}};
  ASSERT_TRUE(run_one(**ctx, Request{.op = Op::Write, .offset = 0, .iov = w, .cookie = 3}));
  Buf r = buffer(12288, 0);
  ASSERT_TRUE(rw(**ctx, Op::Read, 0, r.get(), 12288));
  EXPECT_EQ(r.get()[0], 1);
  EXPECT_EQ(r.get()[4095], 1);
  EXPECT_EQ(r.get()[4096], 2);
  EXPECT_EQ(r.get()[12287], 2);
}

TEST_P(RawBackend, DiscardAndWriteZeroesReadBackAsZeros) {
  auto disk = open();
  EXPECT_TRUE(disk->capabilities().discard);
  EXPECT_TRUE(disk->capabilities().write_zeroes);
  auto ctx = disk->make_io_context(4);
  Buf w = buffer(65536, 0xee), r = buffer(65536, 0x11);
  ASSERT_TRUE(rw(**ctx, Op::Write, 0, w.get(), 65536));
  ASSERT_TRUE(run_one(**ctx, Request{.op = Op::Discard, .offset = 0, .length = 16384, .cookie = 1}));
  ASSERT_TRUE(run_one(**ctx, Request{.op = Op::WriteZeroes, .offset = 16384, .length = 16384, .cookie = 2}));
  ASSERT_TRUE(run_one(**ctx, Request{.op = Op::WriteZeroes, .offset = 32768, .length = 4096,
                                     .may_unmap = true, .cookie = 4}));
  ASSERT_TRUE(rw(**ctx, Op::Read, 0, r.get(), 65536));
  for (size_t i = 0; i < 36864; ++i) ASSERT_EQ(r.get()[i], 0) << i;
  for (size_t i = 36864; i < 65536; ++i) ASSERT_EQ(r.get()[i], 0xee) << i;
}

TEST_P(RawBackend, ManyInFlightEachCompletesOnceWithRightData) {
  auto disk = open();
  constexpr uint32_t kDepth = 32;
  auto ctx = disk->make_io_context(kDepth);
  ASSERT_TRUE(ctx.has_value());
  std::vector<Buf> bufs;
  std::vector<iovec> iov(kDepth);
  for (uint32_t i = 0; i < kDepth; ++i) {
    bufs.push_back(buffer(4096, static_cast<uint8_t>(i + 1)));
    iov[i] = {bufs[i].get(), 4096};
    ASSERT_TRUE((*ctx)->submit(Request{.op = Op::Write, .offset = uint64_t{i} * 8192,
                                       .iov = {&iov[i], 1}, .cookie = i}));
  }
  // One more than the depth is refused, not queued.
  Buf extra = buffer(4096, 0);
  iovec ev{extra.get(), 4096};
  auto over = (*ctx)->submit(Request{.op = Op::Read, .offset = 0, .iov = {&ev, 1}, .cookie = 99});
  ASSERT_FALSE(over.has_value());
  EXPECT_EQ(over.error().code, Errc::QueueFull);
  auto done = wait_for(**ctx, kDepth);
  ASSERT_EQ(done.size(), kDepth);
  std::set<uint64_t> cookies;
  for (auto& c : done) {
    EXPECT_TRUE(c.status.has_value());
    EXPECT_TRUE(cookies.insert(c.cookie).second) << "cookie " << c.cookie << " completed twice";
  }
  for (uint32_t i = 0; i < kDepth; ++i) {
    std::memset(bufs[i].get(), 0, 4096);
    ASSERT_TRUE((*ctx)->submit(Request{.op = Op::Read, .offset = uint64_t{i} * 8192,
                                       .iov = {&iov[i], 1}, .cookie = 100 + i}));
  }
  done = wait_for(**ctx, kDepth);
  ASSERT_EQ(done.size(), kDepth);
  for (uint32_t i = 0; i < kDepth; ++i) EXPECT_EQ(bufs[i].get()[100], i + 1);
}

TEST_P(RawBackend, PastTheEndFailsAndReadOnlyRefusesWrites) {
  auto disk = open();
  auto ctx = disk->make_io_context(2);
  Buf b = buffer(8192, 0);
  auto past = rw(**ctx, Op::Read, (4 << 20) - 4096, b.get(), 8192);
  ASSERT_FALSE(past.has_value());
  EXPECT_EQ(past.error().code, Errc::OutOfRange);
  EXPECT_FALSE(rw(**ctx, Op::Write, 1ull << 40, b.get(), 4096).has_value());
  auto empty = run_one(**ctx, Request{.op = Op::Read, .offset = 0, .cookie = 5});
  EXPECT_FALSE(empty.has_value());
  ctx->reset();
  disk.reset();

  auto ro = open(/*read_only=*/true);
  ASSERT_TRUE(ro);
  EXPECT_TRUE(ro->capabilities().read_only);
  auto rctx = ro->make_io_context(2);
  auto w = rw(**rctx, Op::Write, 0, b.get(), 4096);
  ASSERT_FALSE(w.has_value());
  EXPECT_EQ(w.error().code, Errc::ReadOnly);
  EXPECT_TRUE(rw(**rctx, Op::Read, 0, b.get(), 4096).has_value());
  EXPECT_TRUE(run_one(**rctx, Request{.op = Op::Flush, .cookie = 9}).has_value());
}

// QEMU's rule for a probed raw image (docs/SECURITY.md, "Probed images"):
// once open_disk probed "raw", a write after which the first sector would
// probe as QCOW2 fails and leaves the disk as it was, whichever backend
// runs it; an ordinary write to sector 0, and the magic anywhere else, go
// through. Before, the write went through and the next open probed QCOW2,
// so a guest could hand tern a header of its choosing.
TEST_P(RawBackend, ProbedRawRefusesASectorZeroWriteThatWouldProbeAsQcow2) {
  auto probed = open_disk(OpenOptions{.path = path, .direct = GetParam().direct, .aio = GetParam().aio});
  ASSERT_TRUE(probed.has_value()) << probed.error().message();
  auto& disk = *probed;
  ASSERT_EQ(disk->format_name(), "raw");
  auto ctx = disk->make_io_context(4);
  ASSERT_TRUE(ctx.has_value());
  Buf plain = buffer(8192, 0x5a);
  ASSERT_TRUE(rw(**ctx, Op::Write, 0, plain.get(), 8192));  // sector 0 is the guest's, as data
  Buf header = buffer(8192, 0);
  std::memcpy(header.get(), "QFI\xfb\0\0\0\3", 8);
  auto refused = rw(**ctx, Op::Write, 0, header.get(), 8192);
  EXPECT_FALSE(refused.has_value()) << "a write made the probed raw disk a QCOW2 image";
  if (!refused) {
    EXPECT_EQ(refused.error().code, Errc::ProbeChange);
  }
  // The magic in two buffers, the first only two bytes long: still refused.
  iovec split[2] = {{header.get(), 2}, {header.get() + 2, 8190}};
  EXPECT_FALSE(run_one(**ctx, Request{.op = Op::Write, .offset = 0, .iov = split, .cookie = 11}).has_value());
  // Past the probed bytes the same bytes are data like any other.
  ASSERT_TRUE(rw(**ctx, Op::Write, 65536, header.get(), 8192));
  Buf back = buffer(8192, 0);
  ASSERT_TRUE(rw(**ctx, Op::Read, 0, back.get(), 8192));
  EXPECT_EQ(std::memcmp(back.get(), plain.get(), 8192), 0) << "a refused write changed the disk";
  if (!GetParam().direct) {
    // Byte-granular writes: "QF" is harmless alone, "I\xfb" after it is not.
    ASSERT_TRUE(rw(**ctx, Op::Write, 0, header.get(), 2));
    EXPECT_FALSE(rw(**ctx, Op::Write, 2, header.get() + 2, 2).has_value());
  }
  ctx->reset();
  disk.reset();
  auto again = open_disk(OpenOptions{.path = path, .aio = GetParam().aio});
  ASSERT_TRUE(again.has_value()) << again.error().message();
  EXPECT_EQ((*again)->format_name(), "raw");
  again->reset();
  // image_type=raw given: the bytes are the guest's, whatever they say.
  auto raw = open();
  auto raw_ctx = raw->make_io_context(1);
  EXPECT_TRUE(rw(**raw_ctx, Op::Write, 0, header.get(), 8192).has_value());
}

TEST_P(RawBackend, GrowIsSeenByAnOpenContextShrinkIsRefused) {
  auto disk = open();
  auto ctx = disk->make_io_context(2);
  Buf b = buffer(4096, 0x77);
  EXPECT_FALSE(rw(**ctx, Op::Write, 4 << 20, b.get(), 4096).has_value());
  ASSERT_TRUE(disk->resize(8 << 20));
  EXPECT_EQ(disk->size(), 8u << 20);
  EXPECT_EQ(std::filesystem::file_size(path), 8u << 20);
  EXPECT_TRUE(rw(**ctx, Op::Write, 4 << 20, b.get(), 4096).has_value());
  auto shrink = disk->resize(1 << 20);
  ASSERT_FALSE(shrink.has_value());
  EXPECT_EQ(shrink.error().code, Errc::ShrinkRefused);
  EXPECT_EQ(disk->size(), 8u << 20);
}

TEST_P(RawBackend, UnalignedBuffersAreBouncedUnalignedOffsetsRefusedWithDirect) {
  auto disk = open();
  auto ctx = disk->make_io_context(2);
  std::vector<uint8_t> raw(4096 + 1, 0x3c);
  uint8_t* odd = raw.data() + 1;  // not aligned in memory
  ASSERT_TRUE(rw(**ctx, Op::Write, 8192, odd, 4096).has_value());
  std::vector<uint8_t> back(4096 + 3, 0);
  ASSERT_TRUE(rw(**ctx, Op::Read, 8192, back.data() + 3, 4096).has_value());
  EXPECT_EQ(back[3], 0x3c);
  EXPECT_EQ(back[4098], 0x3c);
  auto unaligned = rw(**ctx, Op::Write, 100, odd, 512);
  if (GetParam().direct) {
    ASSERT_FALSE(unaligned.has_value());
    EXPECT_EQ(unaligned.error().code, Errc::Unaligned);
  } else {
    EXPECT_TRUE(unaligned.has_value());
  }
}

// A file whose size is not a multiple of 512 is a disk of that size rounded
// up to 512, the bytes past the file's end reading as zeros (qemu's raw
// format does the same: its size is counted in sectors, a short read at
// the end of the file is padded with zeros). Before, the disk was the
// file's size: its last partial sector could not be read in sectors, and
// tern-img convert of such a file to qcow2 failed.
TEST_P(RawBackend, OddSizedFileRoundsUpToASectorReadingZerosPastItsEnd) {
  // The last 4 KiB: O_DIRECT may need 4 KiB alignment of the requests.
  constexpr uint64_t kFile = (1 << 20) + 4096 - 24;
  constexpr uint64_t kDisk = (1 << 20) + 4096;
  make_file(path, 0);
  {
    std::vector<uint8_t> bytes(kFile, 0x6b);
    int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::pwrite(fd, bytes.data(), bytes.size(), 0), static_cast<ssize_t>(bytes.size()));
    ::close(fd);
  }
  auto disk = open();
  ASSERT_TRUE(disk);
  EXPECT_EQ(disk->size(), kDisk);
  auto ctx = disk->make_io_context(2);
  ASSERT_TRUE(ctx.has_value());
  Buf r = buffer(8192, 0xee);
  auto last = rw(**ctx, Op::Read, kDisk - 4096, r.get(), 4096);
  ASSERT_TRUE(last) << "the last 4 KiB, its last sector partial: " << last.error().message();
  for (size_t i = 0; i < 4096; ++i) {
    ASSERT_EQ(r.get()[i], i < 4096 - 24 ? 0x6b : 0) << "byte " << i;
  }
  auto past = rw(**ctx, Op::Read, kDisk - 4096, r.get(), 8192);
  ASSERT_FALSE(past.has_value());
  EXPECT_EQ(past.error().code, Errc::OutOfRange);
  // Writing the last sectors makes the file whole, as in qemu.
  Buf w = buffer(4096, 0x21);
  ASSERT_TRUE(rw(**ctx, Op::Write, kDisk - 4096, w.get(), 4096));
  EXPECT_EQ(std::filesystem::file_size(path), kDisk);
  ASSERT_TRUE(rw(**ctx, Op::Read, kDisk - 4096, r.get(), 4096));
  EXPECT_EQ(r.get()[0], 0x21);
  EXPECT_EQ(r.get()[4095], 0x21);
}

// Unaligned buffers under O_DIRECT go through a bounded bounce buffer in
// chunks; a request several chunks long, in odd-sized pieces, round-trips.
TEST_P(RawBackend, UnalignedRequestLongerThanTheBounceChunkRoundTrips) {
  auto disk = open();
  auto ctx = disk->make_io_context(2);
  ASSERT_TRUE(ctx.has_value());
  constexpr size_t kTotal = (3 << 20) + 4096;  // more than three 1 MiB chunks
  std::vector<uint8_t> src(kTotal + 1);
  for (size_t i = 0; i < src.size(); ++i) src[i] = static_cast<uint8_t>(i * 7 + i / 4096);
  uint8_t* odd = src.data() + 1;
  iovec w[3] = {{odd, 1000}, {odd + 1000, 2 << 20}, {odd + 1000 + (2 << 20), kTotal - 1000 - (2 << 20)}};
  ASSERT_TRUE(run_one(**ctx, Request{.op = Op::Write, .offset = 0, .iov = w, .cookie = 1}));
  std::vector<uint8_t> back(kTotal + 3, 0);
  uint8_t* b = back.data() + 3;
  iovec r[2] = {{b, 4097}, {b + 4097, kTotal - 4097}};
  ASSERT_TRUE(run_one(**ctx, Request{.op = Op::Read, .offset = 0, .iov = r, .cookie = 2}));
  EXPECT_EQ(std::memcmp(b, odd, kTotal), 0);
}

// Before: with direct=on the raw backend bounced an unaligned request
// through one aligned_alloc of its whole size, unchecked: a 4 TiB request
// wrote through the NULL it returned (SIGSEGV). A request longer than
// kMaxTransferBytes is now refused with an error, whatever the backend kind.
TEST(RawLimits, FourTebibyteUnalignedDirectWriteIsAnErrorNotACrash) {
  constexpr uint64_t kRegion = uint64_t{1} << 32;
  constexpr size_t kSeg = 0xfffff000u;
  void* p = ::mmap(nullptr, kRegion, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  ASSERT_NE(p, MAP_FAILED);
  uint8_t* huge = static_cast<uint8_t*>(p);
  std::vector<iovec> iov(1025, iovec{huge + 1, kSeg});  // unaligned: would be bounced
  std::string dir = temp_dir();
  std::string path = dir + "/big.img";
  make_file(path, uint64_t{5} << 40);
  for (AioMode aio : {AioMode::Sync, AioMode::Native, AioMode::Threads}) {
    auto disk = open_disk(OpenOptions{.path = path, .type = ImageType::Raw, .direct = true, .aio = aio});
    ASSERT_TRUE(disk.has_value()) << disk.error().message();
    auto ctx = (*disk)->make_io_context(4);
    ASSERT_TRUE(ctx.has_value());
    for (Op op : {Op::Write, Op::Read}) {
      auto r = run_one(**ctx, Request{.op = op, .offset = 0, .iov = iov, .cookie = 9});
      ASSERT_FALSE(r.has_value()) << static_cast<int>(aio);
      EXPECT_EQ(r.error().code, Errc::TooLarge) << r.error().message();
    }
  }
  ::munmap(p, kRegion);
  std::filesystem::remove_all(dir);
}

std::string mode_name(const ::testing::TestParamInfo<Mode>& info) {
  static const char* const kKinds[] = {"Sync", "Native", "Threads"};
  return std::string(kKinds[static_cast<int>(info.param.aio)]) + (info.param.direct ? "Direct" : "Buffered");
}

INSTANTIATE_TEST_SUITE_P(AllKinds, RawBackend,
                         ::testing::Values(Mode{AioMode::Sync, false}, Mode{AioMode::Native, false},
                                           Mode{AioMode::Threads, false}, Mode{AioMode::Sync, true},
                                           Mode{AioMode::Native, true}, Mode{AioMode::Threads, true}),
                         mode_name);

class RawOpen : public ::testing::Test {
 protected:
  void SetUp() override { dir = temp_dir(); }
  void TearDown() override { std::filesystem::remove_all(dir); }
  std::string dir;
};

TEST_F(RawOpen, BadPathsAreErrorsNotCrashes) {
  auto missing = open_disk(OpenOptions{.path = dir + "/nope.img"});
  ASSERT_FALSE(missing.has_value());
  EXPECT_EQ(missing.error().code, Errc::OpenFailed);
  EXPECT_EQ(missing.error().sys_errno, ENOENT);
  EXPECT_NE(missing.error().message().find("nope.img"), std::string::npos);

  auto directory = open_disk(OpenOptions{.path = dir});
  ASSERT_FALSE(directory.has_value());
  EXPECT_EQ(directory.error().code, Errc::NotAFile);
  auto directory_raw = open_disk(OpenOptions{.path = dir, .type = ImageType::Raw});
  ASSERT_FALSE(directory_raw.has_value());
  EXPECT_EQ(directory_raw.error().code, Errc::NotAFile);

  make_file(dir + "/file", 4096);
  auto under_file = open_disk(OpenOptions{.path = dir + "/file/x"});
  ASSERT_FALSE(under_file.has_value());
  EXPECT_EQ(under_file.error().sys_errno, ENOTDIR);

  auto fifo_path = dir + "/fifo";
  ASSERT_EQ(::mkfifo(fifo_path.c_str(), 0600), 0);
  auto fifo = open_disk(OpenOptions{.path = fifo_path, .type = ImageType::Raw, .read_only = true});
  ASSERT_FALSE(fifo.has_value());
  EXPECT_EQ(fifo.error().code, Errc::NotAFile);
}

// Two processes (the lock is per open file description; a child proves it
// across processes): shared+shared is allowed, exclusive conflicts both ways.
TEST_F(RawOpen, LocksConflictBetweenProcesses) {
  std::string path = dir + "/locked.img";
  make_file(path, 1 << 20);
  auto child_open = [&](bool read_only, bool lock) {
    pid_t pid = ::fork();
    if (pid == 0) {
      auto d = open_disk(OpenOptions{.path = path, .read_only = read_only, .lock = lock});
      ::_exit(d ? 0 : (d.error().code == Errc::LockConflict ? 3 : 4));
    }
    int status = 0;
    ::waitpid(pid, &status, 0);
    return WEXITSTATUS(status);
  };
  {
    auto reader = open_disk(OpenOptions{.path = path, .read_only = true});
    ASSERT_TRUE(reader.has_value());
    EXPECT_EQ(child_open(true, true), 0);   // shared + shared
    EXPECT_EQ(child_open(false, true), 3);  // exclusive vs shared
  }
  {
    auto writer = open_disk(OpenOptions{.path = path});
    ASSERT_TRUE(writer.has_value());
    EXPECT_EQ(child_open(true, true), 3);
    EXPECT_EQ(child_open(false, true), 3);
    EXPECT_EQ(child_open(false, false), 0);  // lock=off
    auto second = open_disk(OpenOptions{.path = path});
    ASSERT_FALSE(second.has_value());
    EXPECT_EQ(second.error().code, Errc::LockConflict);
    EXPECT_NE(second.error().message().find(path), std::string::npos);
    EXPECT_NE(second.error().message().find("writing"), std::string::npos) << second.error().message();
  }
  EXPECT_EQ(child_open(false, true), 0);  // released on close
}

// A write the kernel refuses (EFBIG past RLIMIT_FSIZE) comes back as an error
// completion through every context kind.
TEST_F(RawOpen, HostWriteErrorsSurfaceAsErrorCompletions) {
  std::string path = dir + "/big.img";
  make_file(path, 8 << 20);
  pid_t pid = ::fork();
  if (pid == 0) {
    std::signal(SIGXFSZ, SIG_IGN);
    rlimit lim{1 << 20, 1 << 20};
    ::setrlimit(RLIMIT_FSIZE, &lim);
    int code = 0;
    for (AioMode mode : {AioMode::Sync, AioMode::Native, AioMode::Threads}) {
      auto disk = open_disk(OpenOptions{.path = path, .lock = false, .aio = mode});
      if (!disk) _exit(10);
      auto ctx = (*disk)->make_io_context(2);
      std::vector<uint8_t> data(4096, 1);
      iovec v{data.data(), data.size()};
      if (auto s = (*ctx)->submit(Request{.op = Op::Write, .offset = 4 << 20, .iov = {&v, 1}, .cookie = 1}); !s) {
        _exit(11);
      }
      auto done = wait_for(**ctx, 1);
      if (done.size() != 1 || done[0].status.has_value()) code |= 1 << static_cast<int>(mode);
      else if (done[0].status.error().sys_errno != EFBIG) code |= 8 << static_cast<int>(mode);
    }
    _exit(code);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

}  // namespace
}  // namespace tern::block

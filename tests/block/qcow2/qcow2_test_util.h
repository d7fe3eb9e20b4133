// Helpers for the QCOW2 tests: a temporary directory, running qemu-img and
// qemu-io (the format oracle), and synchronous I/O through an IoContext.
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "block/disk.h"
#include "block/io/wait.h"
#include "block/open.h"
#include "tests/support/support.h"

namespace tern::block::qcow2::test {

using tern::test_support::sh;
using tern::test_support::TempDir;

inline std::string tern_img() { return tern::test_support::build_path("tern-img"); }

#define SH_OK(cmd)                                   \
  do {                                               \
    std::string out_;                                \
    int rc_ = ::tern::block::qcow2::test::sh(cmd, &out_); \
    ASSERT_EQ(rc_, 0) << (cmd) << "\n" << out_;      \
  } while (0)

// A zeroed buffer aligned for O_DIRECT, so direct=on tests take the
// asynchronous (Linux AIO) data path rather than the unaligned fallback.
class AlignedBuffer {
 public:
  explicit AlignedBuffer(size_t size) : size_(size) {
    void* p = nullptr;
    if (::posix_memalign(&p, 4096, std::max<size_t>(size, 1)) != 0) std::abort();
    data_.reset(static_cast<uint8_t*>(p));
    std::memset(p, 0, std::max<size_t>(size, 1));
  }
  uint8_t* data() { return data_.get(); }
  size_t size() const { return size_; }
  std::span<uint8_t> span() { return {data_.get(), size_}; }

 private:
  struct Free {
    void operator()(uint8_t* p) const { ::free(p); }
  };
  std::unique_ptr<uint8_t, Free> data_;
  size_t size_;
};

inline std::vector<uint8_t> slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

inline std::unique_ptr<DiskFile> open_image(const std::string& path, bool read_only = false,
                                            bool allow_backing = true, bool direct = false) {
  OpenOptions o;
  o.path = path;
  o.read_only = read_only;
  o.allow_backing = allow_backing;
  o.direct = direct;
  auto disk = open_disk(o);
  EXPECT_TRUE(disk.has_value()) << path << ": " << disk.error().message();
  return disk ? std::move(*disk) : nullptr;
}

// Runs one request to completion on `ctx`.
inline Result<void> run_one(IoContext& ctx, Request req) {
  static uint64_t next_cookie = 1;
  req.cookie = next_cookie++;
  return io::run_to_completion(ctx, req);
}

inline Result<void> pread_disk(IoContext& ctx, uint64_t offset, std::span<uint8_t> buf) {
  iovec v{buf.data(), buf.size()};
  Request r;
  r.op = Op::Read;
  r.offset = offset;
  r.iov = std::span<const iovec>(&v, 1);
  return run_one(ctx, r);
}

inline Result<void> pwrite_disk(IoContext& ctx, uint64_t offset, std::span<const uint8_t> buf) {
  iovec v{const_cast<uint8_t*>(buf.data()), buf.size()};
  Request r;
  r.op = Op::Write;
  r.offset = offset;
  r.iov = std::span<const iovec>(&v, 1);
  return run_one(ctx, r);
}

inline Result<void> simple_op(IoContext& ctx, Op op, uint64_t offset = 0, uint64_t length = 0,
                              bool may_unmap = false) {
  Request r;
  r.op = op;
  r.offset = offset;
  r.length = length;
  r.may_unmap = may_unmap;
  return run_one(ctx, r);
}

// The seeds a stress test runs: TERN_STRESS_SEEDS (a list of N or N-M,
// comma separated), else `fallback` (what ctest runs).
inline std::vector<uint32_t> seeds_from_env(const std::string& fallback) {
  const char* env = std::getenv("TERN_STRESS_SEEDS");
  std::string text = env ? env : fallback;
  std::vector<uint32_t> seeds;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t comma = text.find(',', pos);
    std::string part = text.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    size_t dash = part.find('-');
    uint32_t first = static_cast<uint32_t>(std::stoul(part.substr(0, dash)));
    uint32_t last = dash == std::string::npos ? first : static_cast<uint32_t>(std::stoul(part.substr(dash + 1)));
    for (uint32_t s = first; s <= last; ++s) seeds.push_back(s);
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  return seeds;
}

// The whole disk as Tern reads it.
inline std::vector<uint8_t> read_whole(DiskFile& disk) {
  auto ctx = disk.make_io_context(8);
  EXPECT_TRUE(ctx.has_value());
  std::vector<uint8_t> data(disk.size());
  const uint64_t chunk = 1 << 20;
  AlignedBuffer buf(chunk);
  for (uint64_t off = 0; off < data.size(); off += chunk) {
    uint64_t n = std::min<uint64_t>(chunk, data.size() - off);
    auto r = pread_disk(**ctx, off, buf.span().first(n));
    EXPECT_TRUE(r.has_value()) << "read at " << off << ": " << r.error().message();
    std::copy_n(buf.data(), n, data.begin() + static_cast<ptrdiff_t>(off));
  }
  return data;
}

// Reads `image` through Tern and compares it with qemu-img convert -O raw.
inline void expect_reads_like_qemu(const TempDir& dir, const std::string& image) {
  std::string raw = dir.file("oracle.raw");
  SH_OK("qemu-img convert -O raw '" + image + "' '" + raw + "'");
  auto expected = slurp(raw);
  auto disk = open_image(image, true);
  ASSERT_NE(disk, nullptr);
  auto got = read_whole(*disk);
  ASSERT_EQ(got.size(), expected.size());
  if (got != expected) {
    size_t i = 0;
    while (got[i] == expected[i]) ++i;
    FAIL() << image << ": first difference at byte " << i;
  }
}

}  // namespace tern::block::qcow2::test

// Seeded random write workloads through Tern, mirrored into a raw file:
// afterwards `qemu-img compare` finds them equal and `qemu-img check` finds
// no errors and no leaks, for every refcount width.
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <random>

#include "block/qcow2/create.h"
#include "tests/block/qcow2/qcow2_test_util.h"

namespace tern::block::qcow2::test {
namespace {

struct Workload {
  uint32_t refcount_bits;
  uint32_t seed;
};

std::string name_of(const ::testing::TestParamInfo<Workload>& info) {
  return "bits" + std::to_string(info.param.refcount_bits) + "_seed" + std::to_string(info.param.seed);
}

class RandomWrites : public ::testing::TestWithParam<Workload> {};

void write_mirror(const std::string& path, const std::vector<uint8_t>& data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size()));
}

TEST_P(RandomWrites, MirrorsRawAndChecksClean) {
  const auto [bits, seed] = GetParam();
  std::mt19937_64 rng(seed * 7919 + bits);
  auto pick = [&](uint64_t lo, uint64_t hi) { return std::uniform_int_distribution<uint64_t>(lo, hi)(rng); };
  const uint32_t cluster_choices[] = {512, 4096, 65536};
  const uint64_t cluster = cluster_choices[pick(0, 2)];
  const bool v2 = bits == 16 && pick(0, 1) == 0;
  const bool direct = pick(0, 1) == 1;
  TempDir dir;
  std::string img = dir.file("w.qcow2");
  std::string mirror_path = dir.file("mirror.raw");
  uint64_t size = pick(16, 64) * cluster + pick(0, 7) * 512;

  // Start from an image with compressed clusters where the width allows
  // them to share host clusters (qemu-img needs refcounts above 1).
  std::vector<uint8_t> mirror(size, 0);
  if (bits >= 8 && !v2) {
    for (uint64_t i = 0; i < size; ++i) mirror[i] = static_cast<uint8_t>((i / 512) * 13 + (i % 7));
    write_mirror(mirror_path, mirror);
    SH_OK("qemu-img convert -c -O qcow2 -o cluster_size=" + std::to_string(cluster) +
          ",refcount_bits=" + std::to_string(bits) + " -f raw '" + mirror_path + "' '" + img + "'");
  } else {
    CreateOptions c;
    c.path = img;
    c.size = size;
    c.cluster_size = static_cast<uint32_t>(cluster);
    c.refcount_bits = bits;
    c.version = v2 ? 2 : 3;
    auto r = create_image(c);
    ASSERT_TRUE(r.has_value()) << r.error().message();
  }

  auto disk = open_image(img, false, false, direct);
  ASSERT_NE(disk, nullptr);
  auto ctx = disk->make_io_context(16);
  ASSERT_TRUE(ctx.has_value());
  const int ops = 120;
  for (int op = 0; op < ops; ++op) {
    uint64_t kind = pick(0, 99);
    uint64_t cur = disk->size();
    uint64_t off = pick(0, cur / 512 - 1) * 512;
    uint64_t len = std::min<uint64_t>(pick(1, 3 * cluster / 512 + 2) * 512, cur - off);
    if (kind < 55) {
      std::vector<uint8_t> data(len);
      uint8_t base = static_cast<uint8_t>(pick(1, 255));
      for (uint64_t i = 0; i < len; ++i) data[i] = static_cast<uint8_t>(base + i / 512);
      if (pick(0, 9) == 0 && len > 1) {  // an unaligned write now and then
        off += 3;
        len = std::min<uint64_t>(len - 3, cur - off);
        data.resize(len);
      }
      // Through an aligned copy, so direct=on takes the Linux AIO path.
      AlignedBuffer aligned(data.size());
      std::copy(data.begin(), data.end(), aligned.data());
      auto r = pwrite_disk(**ctx, off, aligned.span());
      ASSERT_TRUE(r.has_value()) << "write " << off << "+" << len << ": " << r.error().message();
      std::copy(data.begin(), data.end(), mirror.begin() + static_cast<ptrdiff_t>(off));
    } else if (kind < 70) {
      auto r = simple_op(**ctx, Op::Discard, off, len);
      ASSERT_TRUE(r.has_value()) << r.error().message();
      // Discard drops whole clusters only; they then read as zeros.
      uint64_t first = (off + cluster - 1) / cluster * cluster;
      uint64_t end = (off + len) / cluster * cluster;
      for (uint64_t p = first; p < end; ++p) mirror[p] = 0;
    } else if (kind < 85) {
      bool unmap = pick(0, 1) == 1;
      auto r = simple_op(**ctx, Op::WriteZeroes, off, len, unmap);
      ASSERT_TRUE(r.has_value()) << r.error().message();
      std::fill_n(mirror.begin() + static_cast<ptrdiff_t>(off), len, 0);
    } else if (kind < 90) {
      uint64_t grown = cur + pick(1, 64) * cluster + pick(0, 3) * 512;
      auto r = disk->resize(grown);
      ASSERT_TRUE(r.has_value()) << r.error().message();
      mirror.resize(grown, 0);
    } else if (kind < 95) {
      AlignedBuffer got(len);
      ASSERT_TRUE(pread_disk(**ctx, off, got.span()).has_value());
      ASSERT_TRUE(std::equal(got.data(), got.data() + len, mirror.begin() + static_cast<ptrdiff_t>(off)))
          << "read " << off << "+" << len;
    } else if (kind < 98) {
      ASSERT_TRUE(simple_op(**ctx, Op::Flush).has_value());
    } else {
      ctx->reset();
      ASSERT_TRUE(disk->close().has_value());
      disk.reset();
      disk = open_image(img, false, false, direct);
      ASSERT_NE(disk, nullptr);
      ctx = disk->make_io_context(16);
      ASSERT_TRUE(ctx.has_value());
    }
  }
  EXPECT_EQ(disk->resize(disk->size() - 512).error().code, Errc::ShrinkRefused);
  ctx->reset();
  ASSERT_TRUE(disk->close().has_value());
  disk.reset();
  write_mirror(mirror_path, mirror);
  SH_OK("qemu-img compare -q -f raw -F qcow2 '" + mirror_path + "' '" + img + "'");
  SH_OK("qemu-img check -q '" + img + "'");
}

// A few seeds per width keep the default run short; TERN_QCOW2_SEEDS adds more.
std::vector<Workload> workloads() {
  uint32_t seeds = 3;
  if (const char* env = std::getenv("TERN_QCOW2_SEEDS")) seeds = static_cast<uint32_t>(std::atoi(env));
  std::vector<Workload> out;
  for (uint32_t bits : {1u, 2u, 4u, 8u, 16u, 32u, 64u}) {
    for (uint32_t s = 1; s <= seeds; ++s) out.push_back({bits, s});
  }
  return out;
}

INSTANTIATE_TEST_SUITE_P(Widths, RandomWrites, ::testing::ValuesIn(workloads()), name_of);

}  // namespace
}  // namespace tern::block::qcow2::test

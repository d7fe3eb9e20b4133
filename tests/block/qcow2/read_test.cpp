// Images written by qemu-img/qemu-io read back through Tern byte for byte
// as `qemu-img convert -O raw` reads them (qemu-img is the oracle).
#include <gtest/gtest.h>

#include "block/qcow2/create.h"
#include "block/qcow2/qcow2_disk.h"
#include "tests/block/qcow2/qcow2_test_util.h"

namespace tern::block::qcow2::test {
namespace {

// A pattern of writes touching several clusters, partial and whole, and
// allocated/unallocated zero clusters and discards.
std::string qemu_io_script(uint64_t cluster) {
  auto c = [&](double n) { return std::to_string(static_cast<uint64_t>(n * static_cast<double>(cluster))); };
  return "-c 'write -P 0x11 0 " + c(3) + "' "
         "-c 'write -P 0x22 " + c(4.5) + " " + c(2) + "' "
         "-c 'write -P 0x33 " + c(10) + " 512' "
         "-c 'write -z " + c(1) + " " + c(1) + "' "
         "-c 'write -z -u " + c(2) + " " + c(1) + "' "
         "-c 'discard " + c(5) + " " + c(1) + "' "
         "-c 'write -P 0x44 " + c(20) + " " + c(1) + "' ";
}

struct Geometry {
  uint32_t cluster;
  uint32_t refcount_bits;
  const char* compat;
};

class ReadMatrix : public ::testing::TestWithParam<Geometry> {};

TEST_P(ReadMatrix, MatchesQemu) {
  const Geometry g = GetParam();
  TempDir dir;
  std::string img = dir.file("a.qcow2");
  SH_OK("qemu-img create -q -f qcow2 -o cluster_size=" + std::to_string(g.cluster) +
        ",refcount_bits=" + std::to_string(g.refcount_bits) + ",compat=" + g.compat + " '" + img +
        "' " + std::to_string(uint64_t{g.cluster} * 40));
  SH_OK("qemu-io -f qcow2 " + qemu_io_script(g.cluster) + " '" + img + "'");
  expect_reads_like_qemu(dir, img);
}

INSTANTIATE_TEST_SUITE_P(
    Geometries, ReadMatrix,
    ::testing::Values(Geometry{512, 16, "1.1"}, Geometry{1024, 1, "1.1"}, Geometry{4096, 2, "1.1"},
                      Geometry{8192, 4, "1.1"}, Geometry{65536, 8, "1.1"}, Geometry{65536, 16, "0.10"},
                      Geometry{65536, 32, "1.1"}, Geometry{131072, 64, "1.1"},
                      Geometry{2u << 20, 16, "1.1"}));

class Compressed : public ::testing::TestWithParam<const char*> {};

TEST_P(Compressed, ReadsLikeQemu) {
  TempDir dir;
  std::string src = dir.file("src.raw");
  std::string img = dir.file("c.qcow2");
  // Compressible and incompressible data, so some compressed clusters span
  // host cluster boundaries.
  SH_OK("qemu-img create -q -f raw '" + src + "' 4M");
  SH_OK("qemu-io -f raw -c 'write -P 0x5a 0 1M' -c 'write -P 0x00 1M 64k' '" + src + "'");
  SH_OK("head -c 1048576 /dev/urandom | dd of='" + src + "' bs=1M seek=2 conv=notrunc status=none");
  SH_OK("for i in $(seq 0 40); do printf 'line %d of text\\n' $i; done | dd of='" + src +
        "' bs=1 seek=3200000 conv=notrunc status=none");
  SH_OK("qemu-img convert -c -O qcow2 -o compression_type=" + std::string(GetParam()) + " '" + src +
        "' '" + img + "'");
  expect_reads_like_qemu(dir, img);
  // Writes into compressed clusters turn them into standard ones.
  {
    auto disk = open_image(img);
    ASSERT_NE(disk, nullptr);
    auto ctx = disk->make_io_context(4);
    ASSERT_TRUE(ctx.has_value());
    std::vector<uint8_t> data(1000, 0xee);
    ASSERT_TRUE(pwrite_disk(**ctx, 100, data).has_value());
    ASSERT_TRUE(pwrite_disk(**ctx, (3 << 20) + 5000, data).has_value());
    ASSERT_TRUE(disk->close().has_value());
  }
  SH_OK("qemu-io -f raw -c 'write -P 0xee 100 1000' -c 'write -P 0xee 3150728 1000' '" + src + "'");
  SH_OK("qemu-img compare -q '" + src + "' '" + img + "'");
  SH_OK("qemu-img check -q '" + img + "'");
}

INSTANTIATE_TEST_SUITE_P(Types, Compressed, ::testing::Values("zlib", "zstd"));

TEST(Backing, ChainsThreeDeepRawAndQcow2) {
  TempDir dir;
  std::string base = dir.file("base.raw");
  std::string mid = dir.file("mid.qcow2");
  std::string top = dir.file("top.qcow2");
  SH_OK("qemu-img create -q -f raw '" + base + "' 3M");
  SH_OK("qemu-io -f raw -c 'write -P 0x01 0 3M' '" + base + "'");
  SH_OK("qemu-img create -q -f qcow2 -b base.raw -F raw '" + mid + "' 6M");
  SH_OK("qemu-io -f qcow2 -c 'write -P 0x02 1M 1M' -c 'write -P 0x03 2500k 1M' '" + mid + "'");
  SH_OK("qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 '" + top + "' 8M");
  SH_OK("qemu-io -f qcow2 -c 'write -P 0x04 1536k 4k' -c 'write -z 2M 64k' -c 'write -P 0x05 7M 100k' '" +
        top + "'");
  expect_reads_like_qemu(dir, top);
  // A partial write into a cluster copies the rest from the backing chain.
  {
    auto disk = open_image(top);
    ASSERT_NE(disk, nullptr);
    auto ctx = disk->make_io_context(4);
    ASSERT_TRUE(ctx.has_value());
    std::vector<uint8_t> data(700, 0x77);
    ASSERT_TRUE(pwrite_disk(**ctx, 2500 * 1024 - 300, data).has_value());
    ASSERT_TRUE(pwrite_disk(**ctx, 5 * 1024 * 1024 + 10, data).has_value());
    EXPECT_EQ(disk->resize(16 << 20).error().code, Errc::Unsupported);
    ASSERT_TRUE(disk->close().has_value());
  }
  expect_reads_like_qemu(dir, top);
  SH_OK("qemu-img check -q '" + top + "'");
}

TEST(Backing, RefusedUnlessAllowed) {
  TempDir dir;
  std::string base = dir.file("base.raw");
  std::string top = dir.file("top.qcow2");
  SH_OK("qemu-img create -q -f raw '" + base + "' 1M");
  SH_OK("qemu-img create -q -f qcow2 -b base.raw -F raw '" + top + "'");
  OpenOptions o;
  o.path = top;
  auto disk = open_disk(o);
  ASSERT_FALSE(disk.has_value());
  EXPECT_EQ(disk.error().code, Errc::BackingRefused);
  EXPECT_NE(disk.error().message().find("backing_files=on"), std::string::npos);
}

// The VMM's rule for probed images (docs/SECURITY.md, "Probed images"):
// with follow_probed_backing off, a QCOW2 header found by probing names no
// file; the error says which option would follow it. With image_type=qcow2
// given, or for callers that follow probed headers (tern-img), it opens.
TEST(Backing, ProbedImageNamesNoBackingFileUnlessTheTypeIsGiven) {
  TempDir dir;
  std::string base = dir.file("base.raw");
  std::string top = dir.file("top.qcow2");
  std::string plain = dir.file("plain.qcow2");
  SH_OK("qemu-img create -q -f raw '" + base + "' 1M");
  SH_OK("qemu-img create -q -f qcow2 -b base.raw -F raw '" + top + "'");
  SH_OK("qemu-img create -q -f qcow2 '" + plain + "' 1M");
  OpenOptions o;
  o.path = top;
  o.allow_backing = true;
  o.follow_probed_backing = false;
  auto refused = open_disk(o);
  ASSERT_FALSE(refused.has_value());
  EXPECT_EQ(refused.error().code, Errc::ProbedBacking);
  EXPECT_NE(refused.error().message().find("image_type=qcow2"), std::string::npos) << refused.error().message();
  EXPECT_NE(refused.error().message().find("base.raw"), std::string::npos) << refused.error().message();
  o.type = ImageType::Qcow2;  // the user says the header is theirs
  auto given = open_disk(o);
  ASSERT_TRUE(given.has_value()) << given.error().message();
  given->reset();
  o.type = ImageType::Auto;
  o.follow_probed_backing = true;  // tern-img, as qemu-img
  EXPECT_TRUE(open_disk(o).has_value());
  o.follow_probed_backing = false;
  o.path = plain;  // probed, but names nothing: opens
  EXPECT_TRUE(open_disk(o).has_value());
}

TEST(Backing, FormatProbedWhenNotRecorded) {
  TempDir dir;
  std::string base = dir.file("base.qcow2");
  std::string top = dir.file("top.qcow2");
  SH_OK("qemu-img create -q -f qcow2 '" + base + "' 2M");
  SH_OK("qemu-io -f qcow2 -c 'write -P 0x61 0 2M' '" + base + "'");
  // Old images record no backing format: Tern's create writes none when
  // none is given, and the format is then probed.
  CreateOptions c;
  c.path = top;
  c.backing_file = "base.qcow2";
  ASSERT_TRUE(create_image(c).has_value());
  std::string info;
  ASSERT_EQ(sh("qemu-img info -U '" + top + "'", &info), 0);
  EXPECT_EQ(info.find("backing file format"), std::string::npos) << info;
  expect_reads_like_qemu(dir, top);
}

TEST(Backing, OverlayLargerThanBackingReadsZerosPastItsEnd) {
  TempDir dir;
  std::string base = dir.file("base.raw");
  std::string top = dir.file("top.qcow2");
  SH_OK("qemu-img create -q -f raw '" + base + "' 1000k");
  SH_OK("qemu-io -f raw -c 'write -P 0x99 0 1000k' '" + base + "'");
  SH_OK("qemu-img create -q -f qcow2 -o cluster_size=65536 -b base.raw -F raw '" + top + "' 4M");
  expect_reads_like_qemu(dir, top);
  auto disk = open_image(top);
  ASSERT_NE(disk, nullptr);
  auto ctx = disk->make_io_context(2);
  ASSERT_TRUE(ctx.has_value());
  // A read spanning the backing file's end: data, then zeros.
  std::vector<uint8_t> buf(8192, 0xff);
  ASSERT_TRUE(pread_disk(**ctx, 1000 * 1024 - 4096, buf).has_value());
  for (size_t i = 0; i < 4096; ++i) ASSERT_EQ(buf[i], 0x99);
  for (size_t i = 4096; i < buf.size(); ++i) ASSERT_EQ(buf[i], 0);
  // A partial write in the cluster holding the end copies data then zeros.
  std::vector<uint8_t> data(512, 0x12);
  ASSERT_TRUE(pwrite_disk(**ctx, 1000 * 1024 + 512, data).has_value());
  ASSERT_TRUE(disk->close().has_value());
  ctx->reset();
  disk.reset();
  SH_OK("qemu-io -f raw -c 'truncate 4M' -c 'write -P 0x12 1024512 512' '" + base + "'");
  SH_OK("qemu-img compare -q -f raw -F qcow2 '" + base + "' '" + top + "'");
  SH_OK("qemu-img check -q '" + top + "'");
}

}  // namespace
}  // namespace tern::block::qcow2::test

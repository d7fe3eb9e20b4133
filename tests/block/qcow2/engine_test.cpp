// Unit tests of the engine's parts: refcount packing for every width, the
// overflow error, header validation of hostile values, refcount table and
// L1 growth.
#include <gtest/gtest.h>

#include <fstream>

#include "block/qcow2/big_endian.h"
#include "block/qcow2/create.h"
#include "block/qcow2/engine.h"
#include "block/qcow2/format.h"
#include "block/qcow2/header_store.h"
#include "block/qcow2/refcounts.h"
#include "tests/block/qcow2/qcow2_test_util.h"

namespace tern::block::qcow2::test {
namespace {

TEST(RefcountEntries, PackEveryWidthWithoutDisturbingNeighbours) {
  for (uint32_t order = 0; order <= 6; ++order) {
    std::vector<uint8_t> block(512, 0);
    const uint64_t entries = 512 * 8 >> order;
    const uint64_t max = order == 6 ? ~uint64_t{0} : (uint64_t{1} << (1u << order)) - 1;
    for (uint64_t i = 0; i < entries; ++i) Refcounts::write_entry(block.data(), order, i, (i * 7) & max);
    for (uint64_t i = 0; i < entries; ++i) {
      ASSERT_EQ(Refcounts::read_entry(block.data(), order, i), (i * 7) & max) << order << " " << i;
    }
    Refcounts::write_entry(block.data(), order, 5, max);
    EXPECT_EQ(Refcounts::read_entry(block.data(), order, 5), max);
    EXPECT_EQ(Refcounts::read_entry(block.data(), order, 4), (4 * 7) & max);
    EXPECT_EQ(Refcounts::read_entry(block.data(), order, 6), (6 * 7) & max);
  }
  // Sub-byte widths fill each byte from its least significant bit (QEMU's layout).
  std::vector<uint8_t> block(16, 0);
  Refcounts::write_entry(block.data(), 0, 1, 1);
  Refcounts::write_entry(block.data(), 1, 4, 3);
  EXPECT_EQ(block[0], 0x02);
  EXPECT_EQ(block[1], 0x03);
}

TEST(Refcounts, OverflowIsAnErrorWithValueMaximumAndWidth) {
  TempDir dir;
  std::string img = dir.file("r.qcow2");
  for (uint32_t bits : {1u, 2u, 4u, 8u}) {
    CreateOptions c;
    c.path = img;
    c.size = 1 << 20;
    c.refcount_bits = bits;
    ASSERT_TRUE(create_image(c).has_value());
    auto file = open_host_file(img, false);
    ASSERT_TRUE(file.has_value());
    auto size = (*file)->size();
    auto header = read_header(**file, *size);
    ASSERT_TRUE(header.has_value());
    HeaderStore store(**file, *header);
    auto rc = Refcounts::load(**file, store, *size, 4);
    ASSERT_TRUE(rc.has_value());
    bool fresh = false;
    auto at = (*rc)->allocate(1, fresh);
    ASSERT_TRUE(at.has_value());
    uint64_t max = (uint64_t{1} << bits) - 1;
    for (uint64_t v = 1; v < max; ++v) ASSERT_TRUE((*rc)->adjust(*at, +1).has_value());
    auto over = (*rc)->adjust(*at, +1);
    ASSERT_FALSE(over.has_value());
    EXPECT_EQ(over.error().code, Errc::RefcountOverflow);
    EXPECT_EQ(over.error().to_errno(), EINVAL);
    const std::string& d = over.error().detail;
    EXPECT_NE(d.find("value " + std::to_string(max)), std::string::npos) << d;
    EXPECT_NE(d.find("maximum " + std::to_string(max)), std::string::npos) << d;
    EXPECT_NE(d.find(std::to_string(bits) + "-bit"), std::string::npos) << d;
    // Still the old value: never truncated.
    EXPECT_EQ(*(*rc)->get(*at), max);
  }
}

// Rewrites 4 or 8 bytes of a fresh image's header and expects open to fail.
void expect_header_refused(uint64_t offset, uint64_t value, int width, Errc code) {
  TempDir dir;
  std::string img = dir.file("h.qcow2");
  SH_OK("qemu-img create -q -f qcow2 '" + img + "' 16M");
  {
    std::fstream f(img, std::ios::in | std::ios::out | std::ios::binary);
    uint8_t bytes[8];
    if (width == 8) store_be<uint64_t>(bytes, value); else store_be<uint32_t>(bytes, static_cast<uint32_t>(value));
    f.seekp(static_cast<std::streamoff>(offset));
    f.write(reinterpret_cast<char*>(bytes), width);
  }
  OpenOptions o;
  o.path = img;
  auto disk = open_disk(o);
  ASSERT_FALSE(disk.has_value()) << "offset " << offset;
  EXPECT_EQ(disk.error().code, code) << disk.error().message();
}

TEST(Header, HostileValuesAreRefused) {
  expect_header_refused(4, 4, 4, Errc::UnsupportedVersion);
  expect_header_refused(20, 8, 4, Errc::BadHeader);          // cluster_bits below 9
  expect_header_refused(20, 22, 4, Errc::BadHeader);         // cluster_bits above 21
  expect_header_refused(36, 0x10000000, 4, Errc::BadHeader); // huge l1_size
  expect_header_refused(36, 0, 4, Errc::BadHeader);          // L1 too small for the size
  expect_header_refused(40, 0x10001, 8, Errc::BadHeader);    // unaligned L1
  expect_header_refused(40, 1ull << 40, 8, Errc::BadHeader); // L1 past the end
  expect_header_refused(48, 0, 8, Errc::BadHeader);          // refcount table at 0
  expect_header_refused(56, 0x100000, 4, Errc::BadHeader);   // huge refcount table
  expect_header_refused(24, 1ull << 62, 8, Errc::BadHeader); // absurd virtual size
  expect_header_refused(72, 1ull << 2, 8, Errc::UnsupportedFeature);   // external data file
  expect_header_refused(72, 1ull << 4, 8, Errc::UnsupportedFeature);   // extended L2
  expect_header_refused(72, 1ull << 40, 8, Errc::UnsupportedFeature);  // unknown bit
  expect_header_refused(96, 7, 4, Errc::BadHeader);          // refcount_order 7
}

TEST(Header, UnknownIncompatibleFeatureIsNamed) {
  TempDir dir;
  std::string img = dir.file("f.qcow2");
  SH_OK("qemu-img create -q -f qcow2 '" + img + "' 1M");
  {
    std::fstream f(img, std::ios::in | std::ios::out | std::ios::binary);
    uint8_t bytes[8];
    store_be<uint64_t>(bytes, 1ull << 2);
    f.seekp(72);
    f.write(reinterpret_cast<char*>(bytes), 8);
  }
  OpenOptions o;
  o.path = img;
  auto disk = open_disk(o);
  ASSERT_FALSE(disk.has_value());
  // qemu-img writes a feature name table; its name for bit 2 is used.
  EXPECT_NE(disk.error().message().find("external data file"), std::string::npos) << disk.error().message();
}

TEST(Growth, RefcountTableAndL1GrowAndRelocate) {
  TempDir dir;
  std::string img = dir.file("g.qcow2");
  std::string mirror = dir.file("g.raw");
  CreateOptions c;
  c.path = img;
  c.size = 1 << 20;
  c.cluster_size = 512;
  c.refcount_bits = 64;  // 64 clusters per refcount block: the table fills fast
  ASSERT_TRUE(create_image(c).has_value());
  std::vector<uint8_t> expected;
  {
    auto disk = open_image(img);
    ASSERT_NE(disk, nullptr);
    auto ctx = disk->make_io_context(4);
    ASSERT_TRUE(ctx.has_value());
    ASSERT_TRUE(disk->resize(6 << 20).has_value());
    expected.assign(6 << 20, 0);
    std::vector<uint8_t> data(256 << 10);
    for (uint64_t off = 0; off < expected.size(); off += data.size()) {
      for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(off / 512 + i / 512 + 1);
      ASSERT_TRUE(pwrite_disk(**ctx, off, data).has_value());
      std::copy(data.begin(), data.end(), expected.begin() + static_cast<ptrdiff_t>(off));
      if (off == 2 << 20) {
        ASSERT_TRUE(disk->resize(12 << 20).has_value());
      }
    }
    expected.resize(12 << 20, 0);
    ASSERT_TRUE(disk->close().has_value());
  }
  std::ofstream(mirror, std::ios::binary).write(reinterpret_cast<const char*>(expected.data()),
                                                static_cast<std::streamsize>(expected.size()));
  SH_OK("qemu-img compare -q -f raw -F qcow2 '" + mirror + "' '" + img + "'");
  SH_OK("qemu-img check -q '" + img + "'");
  std::string info;
  ASSERT_EQ(sh("qemu-img info '" + img + "'", &info), 0);
  EXPECT_NE(info.find("virtual size: 12 MiB"), std::string::npos) << info;
}

TEST(Create, HeaderFieldsAsQemuReadsThem) {
  TempDir dir;
  std::string base = dir.file("b.qcow2");
  std::string img = dir.file("c.qcow2");
  SH_OK("qemu-img create -q -f qcow2 '" + base + "' 3M");
  CreateOptions c;
  c.path = img;
  c.cluster_size = 4096;
  c.refcount_bits = 8;
  c.compression_type = CompressionType::Zstd;
  c.backing_file = "b.qcow2";
  c.backing_format = "qcow2";
  ASSERT_TRUE(create_image(c).has_value());
  std::string info;
  ASSERT_EQ(sh("qemu-img info '" + img + "'", &info), 0);
  EXPECT_NE(info.find("virtual size: 3 MiB"), std::string::npos) << info;
  EXPECT_NE(info.find("cluster_size: 4096"), std::string::npos) << info;
  EXPECT_NE(info.find("compression type: zstd"), std::string::npos) << info;
  EXPECT_NE(info.find("refcount bits: 8"), std::string::npos) << info;
  EXPECT_NE(info.find("backing file: b.qcow2"), std::string::npos) << info;
  EXPECT_NE(info.find("backing file format: qcow2"), std::string::npos) << info;
  SH_OK("qemu-img check -q '" + img + "'");
  c.path = dir.file("v2.qcow2");
  c.version = 2;
  c.refcount_bits = 16;
  c.compression_type = CompressionType::Zlib;
  c.size = 5 << 20;
  ASSERT_TRUE(create_image(c).has_value());
  ASSERT_EQ(sh("qemu-img info '" + c.path + "'", &info), 0);
  EXPECT_NE(info.find("compat: 0.10"), std::string::npos) << info;
  SH_OK("qemu-img check -q '" + c.path + "'");
}

}  // namespace
}  // namespace tern::block::qcow2::test

// The compressed cluster descriptor (block/qcow2/format.h), the one place
// that encodes and decodes it, against the layout qcow2.txt gives.
#include "block/qcow2/format.h"

#include <gtest/gtest.h>

#include <algorithm>

namespace tern::block::qcow2 {
namespace {

TEST(CompressedDescriptor, RoundTripsAndNamesTheClustersItTouches) {
  for (uint32_t bits : {9u, 12u, 16u, 21u}) {
    // Compressed data (at most a cluster) starting 100 bytes before a
    // cluster boundary: it touches two clusters.
    const uint64_t cluster = uint64_t{1} << bits;
    const uint64_t length = std::min<uint64_t>(1000, cluster);
    const uint64_t host = 5 * cluster - 100;
    const uint64_t entry = CompressedDescriptor::encode(host, length, bits);
    EXPECT_TRUE(entry & kOflagCompressed);
    EXPECT_FALSE(entry & kOflagCopied);
    auto d = CompressedDescriptor::decode(entry, bits);
    EXPECT_EQ(d.host_offset, host) << bits;
    // Sectors from the one holding `host` to the one holding its last byte.
    EXPECT_EQ(d.sectors, ((host + length - 1) >> 9) - (host >> 9) + 1) << bits;
    EXPECT_GE(d.readable_bytes(), length);
    EXPECT_LT(d.readable_bytes(), length + 512);
    EXPECT_EQ(d.first_cluster(bits), 4u);
    EXPECT_EQ(d.last_cluster(bits), 5u);
  }
  // The copied flag, which QEMU never sets here, does not leak into the
  // sector count.
  auto d = CompressedDescriptor::decode(CompressedDescriptor::encode(4096, 512, 16) | kOflagCopied, 16);
  EXPECT_EQ(d.host_offset, 4096u);
  EXPECT_EQ(d.sectors, 1u);
}

}  // namespace
}  // namespace tern::block::qcow2

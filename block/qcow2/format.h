// QCOW2 on-disk constants and the header in host order (qcow2.txt, "Header"
// and "Host cluster management"), parsed and validated in one place.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "block/error.h"
#include "block/image.h"
#include "block/qcow2/host_file.h"

namespace tern::block::qcow2 {

inline constexpr uint32_t kMagic = 0x514649fb;  // "QFI\xfb"
inline constexpr uint32_t kMinClusterBits = 9;
inline constexpr uint32_t kMaxClusterBits = 21;
inline constexpr uint32_t kV2HeaderLength = 72;
inline constexpr uint32_t kV3HeaderLength = 104;
inline constexpr uint32_t kV3HeaderWithCompression = 112;
inline constexpr uint32_t kMaxBackingNameLength = 1023;
// Bounds that keep a hostile header from making us allocate gigabytes; the
// same limits QEMU applies (QCOW_MAX_L1_SIZE, QCOW_MAX_REFTABLE_SIZE).
inline constexpr uint64_t kMaxL1Bytes = 32ull << 20;
inline constexpr uint64_t kMaxRefcountTableBytes = 8ull << 20;
inline constexpr uint64_t kMaxVirtualSize = 1ull << 61;

// Header extension types (qcow2.txt, "Header extensions").
inline constexpr uint32_t kExtEnd = 0;
inline constexpr uint32_t kExtBackingFormat = 0xE2792ACA;
inline constexpr uint32_t kExtFeatureNames = 0x6803f857;

// Incompatible feature bits.
inline constexpr uint64_t kIncompatDirty = 1ull << 0;
inline constexpr uint64_t kIncompatCorrupt = 1ull << 1;
inline constexpr uint64_t kIncompatDataFile = 1ull << 2;
inline constexpr uint64_t kIncompatCompression = 1ull << 3;
inline constexpr uint64_t kIncompatExtendedL2 = 1ull << 4;
inline constexpr uint64_t kCompatLazyRefcounts = 1ull << 0;

// L1/L2 entries (qcow2.txt, "Cluster mapping").
inline constexpr uint64_t kOflagCopied = 1ull << 63;
inline constexpr uint64_t kOflagCompressed = 1ull << 62;
inline constexpr uint64_t kOflagZero = 1ull << 0;
inline constexpr uint64_t kOffsetMask = 0x00fffffffffffe00ull;  // bits 9-55

// A compressed cluster's L2 entry (qcow2.txt, "Compressed Clusters
// Descriptor"): with x = 62 - (cluster_bits - 8), bits 0..x-1 hold the host
// byte offset of the compressed data and bits x..61 the number of 512-byte
// sectors it reaches into after the first. The one encoder and decoder.
struct CompressedDescriptor {
  uint64_t host_offset = 0;
  uint64_t sectors = 0;  // 512-byte sectors the data touches, the first included

  // Bytes from host_offset to the end of the last sector (what a reader
  // reads: the compressed stream ends somewhere inside it).
  uint64_t readable_bytes() const { return sectors * 512 - (host_offset & 511); }
  // The host clusters the data touches, first and last.
  uint64_t first_cluster(uint32_t cluster_bits) const { return (host_offset & ~uint64_t{511}) >> cluster_bits; }
  uint64_t last_cluster(uint32_t cluster_bits) const {
    return ((host_offset & ~uint64_t{511}) + sectors * 512 - 1) >> cluster_bits;
  }

  static CompressedDescriptor decode(uint64_t entry, uint32_t cluster_bits) {
    const uint32_t x = 62 - (cluster_bits - 8);
    return {entry & ((uint64_t{1} << x) - 1), ((entry & ~kOflagCompressed & ~kOflagCopied) >> x) + 1};
  }
  // The entry for `length` compressed bytes at `host_offset`.
  static uint64_t encode(uint64_t host_offset, uint64_t length, uint32_t cluster_bits) {
    const uint32_t x = 62 - (cluster_bits - 8);
    const uint64_t more = ((host_offset + length - 1) >> 9) - (host_offset >> 9);
    return kOflagCompressed | (more << x) | host_offset;
  }
};

using block::CompressionType;  // block/image.h: the header's byte

struct FeatureName {
  uint8_t type = 0;  // 0 incompatible, 1 compatible, 2 autoclear
  uint8_t bit = 0;
  std::string name;
};

struct Header {
  uint32_t version = 3;
  uint64_t backing_file_offset = 0;
  uint32_t backing_file_size = 0;
  uint32_t cluster_bits = 16;
  uint64_t size = 0;  // virtual size in bytes
  uint32_t crypt_method = 0;
  uint32_t l1_size = 0;
  uint64_t l1_table_offset = 0;
  uint64_t refcount_table_offset = 0;
  uint32_t refcount_table_clusters = 0;
  uint32_t nb_snapshots = 0;
  uint64_t snapshots_offset = 0;
  uint64_t incompatible_features = 0;
  uint64_t compatible_features = 0;
  uint64_t autoclear_features = 0;
  uint32_t refcount_order = 4;
  uint32_t header_length = kV2HeaderLength;
  CompressionType compression_type = CompressionType::Zlib;
  std::string backing_file;
  std::string backing_format;  // empty when the extension is absent
  std::vector<FeatureName> feature_names;

  uint64_t cluster_size() const { return 1ull << cluster_bits; }
  uint32_t refcount_bits() const { return 1u << refcount_order; }
  uint32_t l2_bits() const { return cluster_bits - 3; }  // 8-byte entries
};

// Reads and validates the header of an image whose file is `file_size` bytes.
[[nodiscard]] Result<Header> read_header(HostFile& file, uint64_t file_size);

// The fixed header fields (72 bytes for v2, 104 for v3) in on-disk form. The
// engine rewrites only these when it updates the header, so the compression
// type byte and the extension area are never touched.
std::vector<uint8_t> encode_fixed_fields(const Header& header);

// A whole new first cluster: fixed fields, compression type (v3), the
// backing-format extension, the end marker and the backing file name after
// the extensions. Sets header.backing_file_offset/size. Fails when it does
// not fit in one cluster.
[[nodiscard]] Result<std::vector<uint8_t>> encode_new_header(Header& header);

// Number of L1 entries needed to map `size` bytes.
uint64_t l1_entries_for(uint64_t size, uint32_t cluster_bits);

}  // namespace tern::block::qcow2

// Header parsing and encoding (qcow2.txt, "Header" and "Header extensions").
#include <algorithm>
#include <cstring>

#include "block/qcow2/big_endian.h"
#include "block/qcow2/format.h"

namespace tern::block::qcow2 {
namespace {

std::unexpected<Error> bad(std::string why) { return fail(Errc::BadHeader, 0, std::move(why)); }

bool aligned(uint64_t value, uint64_t cluster_size) { return (value & (cluster_size - 1)) == 0; }

std::string builtin_incompat_name(unsigned bit) {
  switch (bit) {
    case 0: return "dirty bit";
    case 1: return "corrupt bit";
    case 2: return "external data file";
    case 3: return "compression type";
    case 4: return "extended L2 entries";
    default: return "unknown feature bit " + std::to_string(bit);
  }
}

// The name of an incompatible feature: the image's feature name table first,
// then our own names (issue: "refused with the feature's name").
std::string incompat_name(const Header& h, unsigned bit) {
  for (const auto& f : h.feature_names) {
    if (f.type == 0 && f.bit == bit && !f.name.empty()) return f.name;
  }
  return builtin_incompat_name(bit);
}

Result<void> parse_extensions(Header& h, std::span<const uint8_t> cluster) {
  size_t pos = h.version >= 3 ? h.header_length : kV2HeaderLength;
  // Extensions stop at the backing file name when it lives in this cluster.
  size_t end = cluster.size();
  if (h.backing_file_offset != 0 && h.backing_file_offset < end) end = h.backing_file_offset;
  while (pos + 8 <= end) {
    uint32_t type = load_be<uint32_t>(cluster.data() + pos);
    uint32_t length = load_be<uint32_t>(cluster.data() + pos + 4);
    pos += 8;
    if (type == kExtEnd) return {};
    if (length > end - pos) return bad("header extension runs past the header cluster");
    const uint8_t* data = cluster.data() + pos;
    if (type == kExtBackingFormat) {
      h.backing_format.assign(reinterpret_cast<const char*>(data), length);
      // Stop at a NUL: some writers pad the name.
      h.backing_format.resize(std::strlen(h.backing_format.c_str()));
    } else if (type == kExtFeatureNames) {
      for (size_t i = 0; i + 48 <= length; i += 48) {
        FeatureName f;
        f.type = data[i];
        f.bit = data[i + 1];
        f.name.assign(reinterpret_cast<const char*>(data + i + 2), 46);
        f.name.resize(std::strlen(f.name.c_str()));
        h.feature_names.push_back(std::move(f));
      }
    }  // unknown extensions are skipped (qcow2.txt allows ignoring them)
    pos += (static_cast<size_t>(length) + 7) & ~size_t{7};
  }
  return {};
}

}  // namespace

uint64_t l1_entries_for(uint64_t size, uint32_t cluster_bits) {
  uint64_t per_l1 = 1ull << (cluster_bits + cluster_bits - 3);
  return (size + per_l1 - 1) / per_l1;
}

Result<Header> read_header(HostFile& file, uint64_t file_size) {
  if (file_size < kV2HeaderLength) return bad("file is shorter than a QCOW2 header");
  std::array<uint8_t, kV3HeaderLength> fixed{};
  if (auto r = file.read_at(0, fixed); !r) {
    return fail(Errc::ReadingHeader, r.error().sys_errno);
  }
  const uint8_t* p = fixed.data();
  if (load_be<uint32_t>(p) != kMagic) return bad("not a QCOW2 image");
  Header h;
  h.version = load_be<uint32_t>(p + 4);
  if (h.version != 2 && h.version != 3) {
    return fail(Errc::UnsupportedVersion, 0, "QCOW2 version " + std::to_string(h.version));
  }
  h.backing_file_offset = load_be<uint64_t>(p + 8);
  h.backing_file_size = load_be<uint32_t>(p + 16);
  h.cluster_bits = load_be<uint32_t>(p + 20);
  h.size = load_be<uint64_t>(p + 24);
  h.crypt_method = load_be<uint32_t>(p + 32);
  h.l1_size = load_be<uint32_t>(p + 36);
  h.l1_table_offset = load_be<uint64_t>(p + 40);
  h.refcount_table_offset = load_be<uint64_t>(p + 48);
  h.refcount_table_clusters = load_be<uint32_t>(p + 56);
  h.nb_snapshots = load_be<uint32_t>(p + 60);
  h.snapshots_offset = load_be<uint64_t>(p + 64);
  if (h.version >= 3) {
    if (file_size < kV3HeaderLength) return bad("file is shorter than a v3 header");
    h.incompatible_features = load_be<uint64_t>(p + 72);
    h.compatible_features = load_be<uint64_t>(p + 80);
    h.autoclear_features = load_be<uint64_t>(p + 88);
    h.refcount_order = load_be<uint32_t>(p + 96);
    h.header_length = load_be<uint32_t>(p + 100);
  }

  if (h.cluster_bits < kMinClusterBits || h.cluster_bits > kMaxClusterBits) {
    return bad("cluster_bits " + std::to_string(h.cluster_bits) + " outside 9..21");
  }
  const uint64_t cs = h.cluster_size();
  if (h.version >= 3) {
    if (h.header_length < kV3HeaderLength || h.header_length % 8 != 0 || h.header_length > cs) {
      return bad("header_length " + std::to_string(h.header_length));
    }
    if (h.refcount_order > 6) return bad("refcount_order " + std::to_string(h.refcount_order));
  }

  // The whole first cluster holds the extensions and usually the backing name.
  std::vector<uint8_t> cluster(std::min<uint64_t>(cs, file_size));
  if (auto r = file.read_at(0, cluster); !r) return fail(Errc::ReadingHeader, r.error().sys_errno);
  if (h.version >= 3 && h.header_length > kV3HeaderLength) {
    if (cluster.size() < kV3HeaderLength + 1) return bad("truncated header");
    uint8_t type = cluster[kV3HeaderLength];
    if (type > 1) return bad("compression type " + std::to_string(type));
    h.compression_type = static_cast<CompressionType>(type);
  }
  if (h.backing_file_offset != 0) {
    if (h.backing_file_size == 0 || h.backing_file_size > kMaxBackingNameLength ||
        h.backing_file_offset > cluster.size() ||
        h.backing_file_size > cluster.size() - h.backing_file_offset) {
      return bad("backing file name outside the header cluster");
    }
    h.backing_file.assign(reinterpret_cast<const char*>(cluster.data() + h.backing_file_offset),
                          h.backing_file_size);
  }
  if (auto r = parse_extensions(h, cluster); !r) return std::unexpected(r.error());

  // Incompatible features (qcow2.txt: "an implementation must fail to open
  // an image if it does not understand a bit set here").
  constexpr uint64_t known = kIncompatDirty | kIncompatCorrupt | kIncompatCompression;
  for (unsigned bit = 0; bit < 64; ++bit) {
    uint64_t mask = 1ull << bit;
    if ((h.incompatible_features & mask) && !(known & mask)) {
      return fail(Errc::UnsupportedFeature, 0, incompat_name(h, bit));
    }
  }
  bool compression_bit = (h.incompatible_features & kIncompatCompression) != 0;
  if (compression_bit != (h.compression_type != CompressionType::Zlib)) {
    return bad("compression type bit disagrees with the compression_type field");
  }
  if (h.crypt_method != 0) return fail(Errc::UnsupportedFeature, 0, "encryption");

  if (h.size > kMaxVirtualSize) return bad("virtual size too large");
  // L1 table: large enough for the virtual size, bounded, inside the file.
  if (static_cast<uint64_t>(h.l1_size) * 8 > kMaxL1Bytes) return bad("l1_size too large");
  if (h.l1_size < l1_entries_for(h.size, h.cluster_bits)) return bad("L1 table too small for the virtual size");
  if (!aligned(h.l1_table_offset, cs)) return bad("L1 table offset not cluster aligned");
  if (h.l1_size > 0 && (h.l1_table_offset == 0 || h.l1_table_offset > file_size ||
                        static_cast<uint64_t>(h.l1_size) * 8 > file_size - h.l1_table_offset)) {
    return bad("L1 table outside the file");
  }
  // Refcount table: bounded and inside the file.
  if (h.refcount_table_clusters == 0) return bad("no refcount table");
  uint64_t rt_bytes = static_cast<uint64_t>(h.refcount_table_clusters) * cs;
  if (rt_bytes > kMaxRefcountTableBytes) return bad("refcount table too large");
  if (h.refcount_table_offset == 0 || !aligned(h.refcount_table_offset, cs)) {
    return bad("refcount table offset not cluster aligned");
  }
  if (h.refcount_table_offset > file_size || rt_bytes > file_size - h.refcount_table_offset) {
    return bad("refcount table outside the file");
  }
  if (h.nb_snapshots > 0 && !aligned(h.snapshots_offset, cs)) return bad("snapshot table not aligned");
  return h;
}

std::vector<uint8_t> encode_fixed_fields(const Header& h) {
  std::vector<uint8_t> out(h.version >= 3 ? kV3HeaderLength : kV2HeaderLength);
  uint8_t* p = out.data();
  store_be<uint32_t>(p, kMagic);
  store_be<uint32_t>(p + 4, h.version);
  store_be<uint64_t>(p + 8, h.backing_file_offset);
  store_be<uint32_t>(p + 16, h.backing_file_size);
  store_be<uint32_t>(p + 20, h.cluster_bits);
  store_be<uint64_t>(p + 24, h.size);
  store_be<uint32_t>(p + 32, h.crypt_method);
  store_be<uint32_t>(p + 36, h.l1_size);
  store_be<uint64_t>(p + 40, h.l1_table_offset);
  store_be<uint64_t>(p + 48, h.refcount_table_offset);
  store_be<uint32_t>(p + 56, h.refcount_table_clusters);
  store_be<uint32_t>(p + 60, h.nb_snapshots);
  store_be<uint64_t>(p + 64, h.snapshots_offset);
  if (h.version >= 3) {
    store_be<uint64_t>(p + 72, h.incompatible_features);
    store_be<uint64_t>(p + 80, h.compatible_features);
    store_be<uint64_t>(p + 88, h.autoclear_features);
    store_be<uint32_t>(p + 96, h.refcount_order);
    store_be<uint32_t>(p + 100, h.header_length);
  }
  return out;
}

Result<std::vector<uint8_t>> encode_new_header(Header& h) {
  std::vector<uint8_t> out = encode_fixed_fields(h);
  if (h.version >= 3) {
    h.header_length = kV3HeaderWithCompression;
    store_be<uint32_t>(out.data() + 100, h.header_length);
    out.resize(kV3HeaderWithCompression, 0);
    out[kV3HeaderLength] = static_cast<uint8_t>(h.compression_type);
  }
  auto add_extension = [&](uint32_t type, std::span<const uint8_t> data) {
    size_t at = out.size();
    out.resize(at + 8 + ((data.size() + 7) & ~size_t{7}), 0);
    store_be<uint32_t>(out.data() + at, type);
    store_be<uint32_t>(out.data() + at + 4, static_cast<uint32_t>(data.size()));
    if (!data.empty()) std::memcpy(out.data() + at + 8, data.data(), data.size());
  };
  if (!h.backing_format.empty()) {
    add_extension(kExtBackingFormat, {reinterpret_cast<const uint8_t*>(h.backing_format.data()),
                                      h.backing_format.size()});
  }
  add_extension(kExtEnd, {});
  // The name goes after the end marker, so it can never overwrite an
  // extension (qcow2.txt: the name is not part of the extension area).
  if (!h.backing_file.empty()) {
    if (h.backing_file.size() > kMaxBackingNameLength) return bad("backing file name too long");
    h.backing_file_offset = out.size();
    h.backing_file_size = static_cast<uint32_t>(h.backing_file.size());
    store_be<uint64_t>(out.data() + 8, h.backing_file_offset);
    store_be<uint32_t>(out.data() + 16, h.backing_file_size);
    out.insert(out.end(), h.backing_file.begin(), h.backing_file.end());
  }
  if (out.size() > h.cluster_size()) return bad("header does not fit in one cluster");
  return out;
}

}  // namespace tern::block::qcow2

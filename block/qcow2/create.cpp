#include "block/qcow2/create.h"

#include <fcntl.h>

#include <cerrno>

#include <bit>
#include <vector>

#include "block/image_lock.h"
#include "block/qcow2/backing.h"
#include "block/qcow2/big_endian.h"
#include "block/qcow2/engine.h"
#include "block/qcow2/host_file.h"
#include "block/qcow2/refcounts.h"

namespace tern::block {

// The public functions of block/image.h, over the header code here.
using namespace qcow2;

Result<void> create_image(const CreateOptions& o) {
  if (!std::has_single_bit(o.cluster_size) || o.cluster_size < (1u << kMinClusterBits) ||
      o.cluster_size > (1u << kMaxClusterBits)) {
    return fail(Errc::InvalidArgument, 0, "cluster_size must be a power of two from 512 to 2M");
  }
  if (!std::has_single_bit(o.refcount_bits) || o.refcount_bits > 64) {
    return fail(Errc::InvalidArgument, 0, "refcount_bits must be a power of two up to 64");
  }
  if (o.version == 2 && (o.refcount_bits != 16 || o.compression_type != CompressionType::Zlib)) {
    return fail(Errc::InvalidArgument, 0, "compat=0.10 supports only refcount_bits=16 and zlib");
  }
  if (o.version != 2 && o.version != 3) return fail(Errc::InvalidArgument, 0, "compat");
  uint64_t size = o.size;
  if (!o.backing_file.empty()) {
    auto backing = open_backing(o.path, o.backing_file, o.backing_format);
    if (!backing) return std::unexpected(backing.error());
    if (size == 0) size = (*backing)->size();
  }
  size = (size + 511) & ~uint64_t{511};

  Header h;
  h.version = o.version;
  h.cluster_bits = static_cast<uint32_t>(std::countr_zero(o.cluster_size));
  h.refcount_order = static_cast<uint32_t>(std::countr_zero(o.refcount_bits));
  h.header_length = o.version >= 3 ? kV3HeaderLength : kV2HeaderLength;
  h.compression_type = o.compression_type;
  if (o.compression_type != CompressionType::Zlib) h.incompatible_features |= kIncompatCompression;
  const uint64_t cs = h.cluster_size();
  h.refcount_table_offset = cs;
  h.refcount_table_clusters = 1;

  int fd = ::open(o.path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return fail(Errc::OpenFailed, errno, o.path);
  FdHostFile file{UniqueFd(fd)};
  // Cluster 0: header; 1: refcount table; 2: the refcount block for 0..2.
  auto first = encode_new_header(h);
  if (!first) return std::unexpected(first.error());
  std::vector<uint8_t> image(3 * cs, 0);
  std::copy(first->begin(), first->end(), image.begin());
  store_be<uint64_t>(image.data() + cs, 2 * cs);
  for (uint64_t i = 0; i < 3; ++i) Refcounts::write_entry(image.data() + 2 * cs, h.refcount_order, i, 1);
  if (auto r = file.write_at(0, image); !r) return fail(Errc::WriteFailed, r.error().sys_errno, o.path);
  if (auto r = file.sync(); !r) return fail(Errc::FlushFailed, r.error().sys_errno, o.path);

  if (size > 0) {
    auto reopened = open_host_file(o.path, false);
    if (!reopened) return std::unexpected(reopened.error());
    EngineOptions options;
    auto engine = Engine::open(std::move(*reopened), o.path, options);
    if (!engine) return std::unexpected(engine.error());
    if (auto r = (*engine)->resize(size); !r) return r;
    if (auto r = (*engine)->close(); !r) return r;
  }
  if (!o.backing_file.empty()) {
    // The backing file name goes in last: resize refuses images that have one.
    auto size_now = file.size();
    if (!size_now) return std::unexpected(size_now.error());
    auto current = read_header(file, *size_now);
    if (!current) return std::unexpected(current.error());
    current->backing_file = o.backing_file;
    current->backing_format = o.backing_format;
    auto bytes = encode_new_header(*current);
    if (!bytes) return std::unexpected(bytes.error());
    if (auto r = file.write_at(0, *bytes); !r) return fail(Errc::WritingHeader, r.error().sys_errno);
    if (auto r = file.sync(); !r) return fail(Errc::SyncingHeader, r.error().sys_errno);
  }
  return {};
}

Result<void> set_backing_file(const std::string& path, const std::string& name, const std::string& format) {
  auto file = open_host_file(path, false);
  if (!file) return std::unexpected(file.error());
  if (auto r = lock_image((*file)->fd(), true, path); !r) return r;
  auto size = (*file)->size();
  if (!size) return std::unexpected(size.error());
  auto h = read_header(**file, *size);
  if (!h) return std::unexpected(h.error());
  if (h->incompatible_features & (kIncompatDirty | kIncompatCorrupt)) {
    return fail(Errc::CorruptImage, 0, path + ": not closed cleanly or corrupt; check it first");
  }
  h->backing_file = name;
  h->backing_format = name.empty() ? std::string() : format;
  if (name.empty()) {
    h->backing_file_offset = 0;
    h->backing_file_size = 0;
  }
  h->autoclear_features = 0;
  auto bytes = encode_new_header(*h);
  if (!bytes) return std::unexpected(bytes.error());
  bytes->resize(h->cluster_size(), 0);  // nothing of the old extension area stays
  if (auto r = (*file)->write_at(0, *bytes); !r) return fail(Errc::WritingHeader, r.error().sys_errno, path);
  if (auto r = (*file)->sync(); !r) return fail(Errc::SyncingHeader, r.error().sys_errno, path);
  return {};
}

}  // namespace tern::block

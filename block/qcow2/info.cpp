#include "block/qcow2/info.h"

#include "block/qcow2/format.h"
#include "block/qcow2/host_file.h"

namespace tern::block {

// The public functions of block/image.h, over the header code here.
using namespace qcow2;

Result<ImageInfo> read_image_info(const std::string& path) {
  auto file = open_host_file(path, true);
  if (!file) return std::unexpected(file.error());
  auto size = (*file)->size();
  if (!size) return std::unexpected(size.error());
  auto h = read_header(**file, *size);
  if (!h) {
    Error e = h.error();
    e.detail = path + ": " + e.detail;
    return std::unexpected(e);
  }
  ImageInfo info;
  info.virtual_size = h->size;
  info.cluster_size = h->cluster_size();
  info.compat = h->version >= 3 ? "1.1" : "0.10";
  info.compression_type = h->compression_type == CompressionType::Zstd ? "zstd" : "zlib";
  info.lazy_refcounts = (h->compatible_features & kCompatLazyRefcounts) != 0;
  info.refcount_bits = h->refcount_bits();
  info.corrupt = (h->incompatible_features & kIncompatCorrupt) != 0;
  info.extended_l2 = (h->incompatible_features & kIncompatExtendedL2) != 0;
  info.dirty = (h->incompatible_features & kIncompatDirty) != 0;
  info.backing_file = h->backing_file;
  info.backing_format = h->backing_format;
  return info;
}

}  // namespace tern::block

// The QCOW2 fields `tern-img info` shows, as qemu-img info names them.
#pragma once

#include <cstdint>
#include <string>

#include "block/error.h"

namespace tern::block::qcow2 {

struct ImageInfo {
  uint64_t virtual_size = 0;
  uint64_t cluster_size = 0;
  std::string compat;            // "0.10" (v2) or "1.1" (v3)
  std::string compression_type;  // "zlib" or "zstd"
  bool lazy_refcounts = false;
  uint32_t refcount_bits = 16;
  bool corrupt = false;
  bool extended_l2 = false;
  bool dirty = false;
  std::string backing_file;    // empty when none
  std::string backing_format;  // empty when not recorded
};

[[nodiscard]] Result<ImageInfo> read_image_info(const std::string& path);

}  // namespace tern::block::qcow2

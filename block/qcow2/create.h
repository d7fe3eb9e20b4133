// Creating QCOW2 images (tern-img create -f qcow2).
#pragma once

#include <cstdint>
#include <string>

#include "block/error.h"
#include "block/qcow2/format.h"

namespace tern::block::qcow2 {

struct CreateOptions {
  std::string path;
  uint64_t size = 0;  // 0 with a backing file: the backing file's size
  uint32_t cluster_size = 65536;
  uint32_t refcount_bits = 16;
  uint32_t version = 3;  // compat=1.1 -> 3, compat=0.10 -> 2
  CompressionType compression_type = CompressionType::Zlib;
  std::string backing_file;
  std::string backing_format;  // "raw", "qcow2" or empty
};

// Writes a new image: header cluster, a one-cluster refcount table and one
// refcount block, then grows it to `size` through Engine::resize (the same
// path as tern-img resize and live grow).
[[nodiscard]] Result<void> create_image(const CreateOptions& options);

}  // namespace tern::block::qcow2

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

// Rewrites the header cluster of a cleanly closed image at `path` to name
// another backing file (empty: none) and format (tern-img rebase, the
// header part). The extension area is written anew: the backing-format
// extension only, and the autoclear bits cleared (qcow2.txt: a writer that
// does not keep an extension's data clears its autoclear bit).
[[nodiscard]] Result<void> set_backing_file(const std::string& path, const std::string& name,
                                            const std::string& format);

}  // namespace tern::block::qcow2

// Decoding compressed clusters (qcow2.txt, "Compressed Clusters
// Descriptor"): zlib as raw deflate, or zstd, per the header's
// compression_type.
#pragma once

#include <cstdint>
#include <span>

#include "block/error.h"
#include "block/qcow2/format.h"

namespace tern::block::qcow2 {

// Decodes `in` (which may carry padding after the stream) into exactly
// out.size() bytes; anything else is Errc::Decompression.
[[nodiscard]] Result<void> decompress_cluster(CompressionType type, std::span<const uint8_t> in,
                                              std::span<uint8_t> out);

}  // namespace tern::block::qcow2

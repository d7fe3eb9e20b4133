// Encoding and decoding compressed clusters (qcow2.txt, "Compressed Clusters
// Descriptor"): zlib as raw deflate, or zstd, per the header's
// compression_type.
#pragma once

#include <cstdint>
#include <optional>
#include <span>

#include "block/error.h"
#include "block/qcow2/format.h"

namespace tern::block::qcow2 {

// Decodes `in` (which may carry padding after the stream) into exactly
// out.size() bytes; anything else is Errc::Decompression.
[[nodiscard]] Result<void> decompress_cluster(CompressionType type, std::span<const uint8_t> in,
                                              std::span<uint8_t> out);

// Encodes one cluster `in` into `out` the way QEMU does (zlib: raw deflate,
// default level, 4 KiB window; zstd: one frame). The length used, or
// nullopt when the encoding does not fit in out.size() bytes (then the
// cluster is not worth compressing).
[[nodiscard]] Result<std::optional<size_t>> compress_cluster(CompressionType type, std::span<const uint8_t> in,
                                                             std::span<uint8_t> out);

}  // namespace tern::block::qcow2

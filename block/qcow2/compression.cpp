#include "block/qcow2/compression.h"

#include <zlib.h>
#include <zstd.h>
#include <zstd_errors.h>

namespace tern::block::qcow2 {
namespace {

Result<void> inflate_raw(std::span<const uint8_t> in, std::span<uint8_t> out) {
  z_stream zs{};
  // Negative window bits: a raw deflate stream without zlib header, as
  // QEMU writes it; 15 accepts any window size.
  if (inflateInit2(&zs, -15) != Z_OK) return fail(Errc::Decompression, 0, "inflateInit2");
  zs.next_in = const_cast<Bytef*>(in.data());
  zs.avail_in = static_cast<uInt>(in.size());
  zs.next_out = out.data();
  zs.avail_out = static_cast<uInt>(out.size());
  int ret = inflate(&zs, Z_FINISH);
  bool full = zs.avail_out == 0;
  inflateEnd(&zs);
  // Z_BUF_ERROR with a full output: the stream continues into padding.
  if ((ret == Z_STREAM_END || ret == Z_BUF_ERROR) && full) return {};
  return fail(Errc::Decompression, 0, "zlib stream does not decode to one cluster");
}

Result<void> zstd_decode(std::span<const uint8_t> in, std::span<uint8_t> out) {
  ZSTD_DCtx* dctx = ZSTD_createDCtx();
  if (dctx == nullptr) return fail(Errc::Decompression, 0, "ZSTD_createDCtx");
  ZSTD_inBuffer input{in.data(), in.size(), 0};
  ZSTD_outBuffer output{out.data(), out.size(), 0};
  size_t ret = 1;
  // Stream until the frame ends or the cluster is full; the input may end
  // with sector padding after the frame.
  while (output.pos < output.size && input.pos < input.size) {
    ret = ZSTD_decompressStream(dctx, &output, &input);
    if (ZSTD_isError(ret) || ret == 0) break;
  }
  ZSTD_freeDCtx(dctx);
  if (ZSTD_isError(ret)) return fail(Errc::Decompression, 0, ZSTD_getErrorName(ret));
  if (output.pos != output.size) {
    return fail(Errc::Decompression, 0, "zstd frame does not decode to one cluster");
  }
  return {};
}

Result<std::optional<size_t>> deflate_raw(std::span<const uint8_t> in, std::span<uint8_t> out) {
  z_stream zs{};
  // QEMU's parameters: raw deflate (negative window bits), 4 KiB window.
  if (deflateInit2(&zs, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -12, 9, Z_DEFAULT_STRATEGY) != Z_OK) {
    return fail(Errc::OutOfMemory, 0, "deflateInit2");
  }
  zs.next_in = const_cast<Bytef*>(in.data());
  zs.avail_in = static_cast<uInt>(in.size());
  zs.next_out = out.data();
  zs.avail_out = static_cast<uInt>(out.size());
  int ret = deflate(&zs, Z_FINISH);
  size_t used = out.size() - zs.avail_out;
  deflateEnd(&zs);
  if (ret == Z_STREAM_END) return used;
  if (ret == Z_OK || ret == Z_BUF_ERROR) return std::nullopt;  // out is full: does not fit
  return fail(Errc::Internal, 0, "deflate failed");
}

Result<std::optional<size_t>> zstd_encode(std::span<const uint8_t> in, std::span<uint8_t> out) {
  size_t ret = ZSTD_compress(out.data(), out.size(), in.data(), in.size(), ZSTD_CLEVEL_DEFAULT);
  if (ZSTD_isError(ret)) {
    if (ZSTD_getErrorCode(ret) == ZSTD_error_dstSize_tooSmall) return std::nullopt;
    return fail(Errc::Internal, 0, ZSTD_getErrorName(ret));
  }
  return ret;
}

}  // namespace

Result<std::optional<size_t>> compress_cluster(CompressionType type, std::span<const uint8_t> in,
                                               std::span<uint8_t> out) {
  return type == CompressionType::Zstd ? zstd_encode(in, out) : deflate_raw(in, out);
}

Result<void> decompress_cluster(CompressionType type, std::span<const uint8_t> in,
                                std::span<uint8_t> out) {
  return type == CompressionType::Zstd ? zstd_decode(in, out) : inflate_raw(in, out);
}

}  // namespace tern::block::qcow2

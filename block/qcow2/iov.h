// Byte-range helpers over a request's iovec list: the engine copies into,
// out of and zeroes parts of the guest buffers, and slices them for the
// asynchronous data path.
#pragma once

#include <sys/uio.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

namespace tern::block::qcow2 {

inline uint64_t iov_length(std::span<const iovec> iov) {
  uint64_t total = 0;
  for (const auto& v : iov) total += v.iov_len;
  return total;
}

// Calls fn(ptr, len) for each piece of [offset, offset+length) of `iov`.
template <class Fn>
void iov_for_range(std::span<const iovec> iov, uint64_t offset, uint64_t length, Fn&& fn) {
  for (const auto& v : iov) {
    if (length == 0) return;
    if (offset >= v.iov_len) {
      offset -= v.iov_len;
      continue;
    }
    uint64_t n = std::min<uint64_t>(v.iov_len - offset, length);
    fn(static_cast<uint8_t*>(v.iov_base) + offset, n);
    length -= n;
    offset = 0;
  }
}

inline void iov_copy_from(std::span<const iovec> iov, uint64_t offset, std::span<const uint8_t> src) {
  const uint8_t* p = src.data();
  iov_for_range(iov, offset, src.size(), [&](uint8_t* dst, uint64_t n) {
    std::memcpy(dst, p, n);
    p += n;
  });
}

inline void iov_copy_to(std::span<const iovec> iov, uint64_t offset, std::span<uint8_t> dst) {
  uint8_t* p = dst.data();
  iov_for_range(iov, offset, dst.size(), [&](uint8_t* src, uint64_t n) {
    std::memcpy(p, src, n);
    p += n;
  });
}

inline void iov_zero(std::span<const iovec> iov, uint64_t offset, uint64_t length) {
  iov_for_range(iov, offset, length, [](uint8_t* dst, uint64_t n) { std::memset(dst, 0, n); });
}

inline void iov_slice(std::span<const iovec> iov, uint64_t offset, uint64_t length,
                      std::vector<iovec>& out) {
  iov_for_range(iov, offset, length, [&](uint8_t* p, uint64_t n) { out.push_back(iovec{p, n}); });
}

}  // namespace tern::block::qcow2

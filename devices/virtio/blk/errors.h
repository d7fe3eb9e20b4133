// What a failed virtio-blk request leaves on the host: a count by kind in the
// disk's counters (base/block_counters.h: errors and errors_<kind>) and, for
// a backend error, a log line with the backend's message, the first of each
// kind at once and then at most one per kind per period (with the number
// suppressed), so a guest that retries a failing request cannot flood the log.
//
// Threads: any (the queue workers of one disk share one BlkErrorLog).
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <string_view>

#include "base/block_counters.h"
#include "block/disk.h"
#include "block/error.h"
#include "devices/virtio/rate_limited_log.h"

namespace tern::devices {

enum class BlkErrorKind : uint8_t { Invalid, Unsupported, Io, NoSpace, Image, Other };
inline constexpr size_t kBlkErrorKinds = 6;

BlkErrorKind blk_error_kind(const block::Error& error);
// Adds one to `errors` and to the counter of `kind`.
void count_blk_error(AtomicBlockCounters& counters, BlkErrorKind kind);

class BlkErrorLog {
 public:
  explicit BlkErrorLog(std::chrono::steady_clock::duration period = std::chrono::seconds(10));
  // "tern: <who>: write of 4096 bytes at offset 8192 failed: <the backend's message>"
  void failed(std::string_view who, block::Op op, uint64_t offset, uint64_t bytes, const block::Error& error);

 private:
  std::array<RateLimitedLog, kBlkErrorKinds> logs_;  // by BlkErrorKind
};

}  // namespace tern::devices

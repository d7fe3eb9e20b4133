#include "devices/virtio/blk/errors.h"

#include <array>
#include <string>

namespace tern::devices {

BlkErrorKind blk_error_kind(const block::Error& error) {
  switch (error.error_class()) {
    case block::ErrorClass::BadRequest:
    case block::ErrorClass::Refused: return BlkErrorKind::Invalid;
    case block::ErrorClass::Unsupported: return BlkErrorKind::Unsupported;
    case block::ErrorClass::Io: return BlkErrorKind::Io;
    case block::ErrorClass::NoSpace: return BlkErrorKind::NoSpace;
    case block::ErrorClass::Image: return BlkErrorKind::Image;
    case block::ErrorClass::Other: return BlkErrorKind::Other;
  }
  return BlkErrorKind::Other;
}

void count_blk_error(AtomicBlockCounters& counters, BlkErrorKind kind) {
  // By BlkErrorKind.
  static constexpr std::array<std::atomic<uint64_t> AtomicBlockCounters::*, kBlkErrorKinds> kByKind = {
      &AtomicBlockCounters::errors_invalid, &AtomicBlockCounters::errors_unsupported,
      &AtomicBlockCounters::errors_io,      &AtomicBlockCounters::errors_no_space,
      &AtomicBlockCounters::errors_image,   &AtomicBlockCounters::errors_other};
  counters.errors.fetch_add(1, std::memory_order_relaxed);
  (counters.*kByKind[static_cast<size_t>(kind)]).fetch_add(1, std::memory_order_relaxed);
}

BlkErrorLog::BlkErrorLog(std::chrono::steady_clock::duration period)
    : logs_{RateLimitedLog(1, period), RateLimitedLog(1, period), RateLimitedLog(1, period),
            RateLimitedLog(1, period), RateLimitedLog(1, period), RateLimitedLog(1, period)} {}

void BlkErrorLog::failed(std::string_view who, block::Op op, uint64_t offset, uint64_t bytes,
                         const block::Error& error) {
  std::string what;
  switch (op) {
    case block::Op::Read: what = "read"; break;
    case block::Op::Write: what = "write"; break;
    case block::Op::Flush: what = "flush"; break;
    case block::Op::Discard: what = "discard"; break;
    case block::Op::WriteZeroes: what = "write-zeroes"; break;
  }
  if (op != block::Op::Flush) {
    what += " of " + std::to_string(bytes) + " bytes at offset " + std::to_string(offset);
  }
  what += " failed: " + error.message();
  logs_[static_cast<size_t>(blk_error_kind(error))].log(who, what);
}

}  // namespace tern::devices

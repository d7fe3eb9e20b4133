#include "devices/virtio/blk_errors.h"

#include <cerrno>
#include <string>

namespace tern::devices {

BlkErrorKind blk_error_kind(const block::Error& error) {
  using block::Errc;
  if (error.code == Errc::NoSpace || error.sys_errno == ENOSPC || error.sys_errno == EDQUOT) {
    return BlkErrorKind::NoSpace;
  }
  switch (error.code) {
    case Errc::OutOfRange:
    case Errc::Unaligned:
    case Errc::ReadOnly:
    case Errc::InvalidArgument:
    case Errc::ProbeChange:  // the guest's write would turn its raw disk into another format
      return BlkErrorKind::Invalid;
    case Errc::Unsupported:
      return BlkErrorKind::Unsupported;
    case Errc::ReadFailed:
    case Errc::WriteFailed:
    case Errc::FlushFailed:
    case Errc::DiscardFailed:
    case Errc::WriteZeroesFailed:
    case Errc::ShortTransfer:
    case Errc::SubmitFailed:
    case Errc::AioSetupFailed:
      return BlkErrorKind::Io;
    case Errc::BadHeader:
    case Errc::BackingFailed:
    case Errc::CorruptImage:
    case Errc::RefcountOverflow:
    case Errc::ReadingMetadata:
    case Errc::WritingMetadata:
    case Errc::ReadingHeader:
    case Errc::WritingHeader:
    case Errc::SyncingHeader:
    case Errc::Decompression:
      return BlkErrorKind::Image;
    default:
      return BlkErrorKind::Other;
  }
}

void count_blk_error(AtomicBlockCounters& counters, BlkErrorKind kind) {
  counters.errors.fetch_add(1, std::memory_order_relaxed);
  std::atomic<uint64_t>* by_kind = nullptr;
  switch (kind) {
    case BlkErrorKind::Invalid: by_kind = &counters.errors_invalid; break;
    case BlkErrorKind::Unsupported: by_kind = &counters.errors_unsupported; break;
    case BlkErrorKind::Io: by_kind = &counters.errors_io; break;
    case BlkErrorKind::NoSpace: by_kind = &counters.errors_no_space; break;
    case BlkErrorKind::Image: by_kind = &counters.errors_image; break;
    case BlkErrorKind::Other: by_kind = &counters.errors_other; break;
  }
  by_kind->fetch_add(1, std::memory_order_relaxed);
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

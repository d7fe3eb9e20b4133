// Errors of the block layer: one enum value per failing step, so callers and
// tests can tell, say, WritingHeader from SyncingHeader. Converted to text only
// at the edge (message()).
#pragma once

#include <cstdint>
#include <expected>
#include <string>

namespace tern::block {

enum class Errc {
  // Opening and probing.
  OpenFailed,          // open(2) failed (sys_errno says why)
  NotAFile,            // a directory or other non-regular, non-block file
  LockConflict,        // another process holds a conflicting OFD lock
  LockFailed,          // fcntl(F_OFD_SETLK) failed for another reason
  UnknownFormat,       // probing could not tell the image format
  ProbedBacking,       // a probed QCOW2 image names a backing file and the caller wants image_type=qcow2 for that
  // Requests.
  OutOfRange,          // request extends past the end of the disk
  Unaligned,           // O_DIRECT request or buffer not aligned
  ReadOnly,            // write-type request on a read-only disk
  Unsupported,         // operation not supported by this backend
  QueueFull,           // more requests in flight than the context's depth
  InvalidArgument,     // malformed request (e.g. zero-length iovec list)
  ReadFailed,
  WriteFailed,
  FlushFailed,
  DiscardFailed,
  WriteZeroesFailed,
  ShortTransfer,       // I/O returned fewer bytes than asked (e.g. past EOF)
  AioSetupFailed,      // io_setup failed; callers may fall back to threads
  SubmitFailed,        // io_submit failed
  TooLarge,            // read or write longer than kMaxTransferBytes
  Cancelled,           // dropped by IoContext::cancel() (reset, shutdown)
  ProbeChange,         // a write that would make a probed raw image probe as another format
  OutOfMemory,         // a bounded buffer could not be allocated
  // Resizing.
  ShrinkRefused,
  ResizeFailed,
  // QCOW2 engine (block/qcow2/).
  BadHeader,
  UnsupportedVersion,
  UnsupportedFeature,  // detail names the feature
  BackingRefused,      // image has a backing file but backing_files=off
  BackingFailed,
  BackingLoop,          // an image names one above it in its chain (detail: the chain)
  BackingChainTooDeep,  // more than kMaxBackingDepth backing files (detail: the chain)
  BackingIsDevice,      // a block device as backing file without allow_block_backing
  CorruptImage,
  RefcountOverflow,    // detail carries value, maximum and width
  ReadingMetadata,
  WritingMetadata,
  ReadingHeader,
  WritingHeader,
  SyncingHeader,
  Decompression,
  NoSpace,
  Internal,
};

// How an error is treated by those who sort errors: the guest's status and
// the disk's error counters (devices/virtio/blk/errors.h), the API's status
// code (vmm/api_control.cpp), the rate-limited log.
enum class ErrorClass : uint8_t {
  BadRequest,   // the request itself is wrong: past the end, malformed
  Refused,      // a well-formed request this disk will not do: read-only, shrink, alignment
  Unsupported,  // an operation this backend does not have
  Io,           // the host's I/O failed
  NoSpace,      // the host's file system is full (also any ENOSPC or EDQUOT)
  Image,        // the image's metadata is bad, or reading or writing it failed
  Other,        // opening, locking, resources, cancellation, tern's own faults
};

// One row per Errc, in declaration order: its text, class and errno (the
// errno reported when the failing call gave none). The only place an Errc
// is sorted; a new Errc without its row does not compile (error.cpp).
struct ErrcInfo {
  Errc code;
  const char* text;
  ErrorClass error_class;
  int default_errno;
};
const ErrcInfo& errc_info(Errc code);

const char* errc_name(Errc code);

struct Error {
  Errc code = Errc::Internal;
  int sys_errno = 0;   // errno of the failing call, 0 when not a syscall
  std::string detail;  // file name, feature name, values... (may be empty)

  // "open /x/y.img: No such file or directory" style text for the edge.
  std::string message() const;
  // The errno to report for this error (guest status mapping, exit codes).
  int to_errno() const;
  // errc_info(code).error_class, except that a failing call's ENOSPC or
  // EDQUOT makes any error NoSpace.
  ErrorClass error_class() const;
};

template <class T>
using Result = std::expected<T, Error>;

inline std::unexpected<Error> fail(Errc code, int sys_errno = 0, std::string detail = {}) {
  return std::unexpected(Error{code, sys_errno, std::move(detail)});
}

}  // namespace tern::block

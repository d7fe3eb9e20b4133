#include "block/error.h"

#include <cerrno>

#include "base/error.h"

namespace tern::block {

const char* errc_name(Errc code) {
  switch (code) {
    case Errc::OpenFailed: return "cannot open";
    case Errc::NotAFile: return "not a regular file or block device";
    case Errc::LockConflict: return "image is locked by another process";
    case Errc::LockFailed: return "cannot lock image";
    case Errc::UnknownFormat: return "unknown image format";
    case Errc::ProbedBacking:
      return "the image was probed as QCOW2 and names a backing file; follow it only with image_type=qcow2";
    case Errc::OutOfRange: return "request past the end of the disk";
    case Errc::Unaligned: return "unaligned request";
    case Errc::ReadOnly: return "disk is read-only";
    case Errc::Unsupported: return "operation not supported";
    case Errc::QueueFull: return "too many requests in flight";
    case Errc::InvalidArgument: return "invalid argument";
    case Errc::ReadFailed: return "read failed";
    case Errc::WriteFailed: return "write failed";
    case Errc::FlushFailed: return "flush failed";
    case Errc::DiscardFailed: return "discard failed";
    case Errc::WriteZeroesFailed: return "write-zeroes failed";
    case Errc::ShortTransfer: return "short transfer";
    case Errc::AioSetupFailed: return "cannot set up Linux AIO";
    case Errc::SubmitFailed: return "cannot submit AIO request";
    case Errc::TooLarge: return "request longer than the largest transfer";
    case Errc::Cancelled: return "request cancelled";
    case Errc::ProbeChange:
      return "write refused: it would make this probed raw image look like another format (give image_type=raw)";
    case Errc::OutOfMemory: return "cannot allocate a buffer";
    case Errc::ShrinkRefused: return "shrinking is not supported";
    case Errc::ResizeFailed: return "resize failed";
    case Errc::BadHeader: return "invalid image header";
    case Errc::UnsupportedVersion: return "unsupported image version";
    case Errc::UnsupportedFeature: return "unsupported image feature";
    case Errc::BackingRefused: return "image has a backing file; enable it with backing_files=on";
    case Errc::BackingFailed: return "cannot open backing file";
    case Errc::BackingLoop: return "backing chain loops";
    case Errc::BackingChainTooDeep: return "backing chain too deep (at most 16 backing files)";
    case Errc::BackingIsDevice: return "backing file is a block device (not allowed unless asked for)";
    case Errc::CorruptImage: return "image is corrupt";
    case Errc::RefcountOverflow: return "refcount overflow";
    case Errc::ReadingMetadata: return "reading metadata failed";
    case Errc::WritingMetadata: return "writing metadata failed";
    case Errc::ReadingHeader: return "reading header failed";
    case Errc::WritingHeader: return "writing header failed";
    case Errc::SyncingHeader: return "syncing header failed";
    case Errc::Decompression: return "decompression failed";
    case Errc::NoSpace: return "no space left";
    case Errc::Internal: return "internal error";
  }
  return "unknown error";
}

std::string Error::message() const {
  std::string text = errc_name(code);
  if (!detail.empty()) text += ": " + detail;
  if (sys_errno != 0) text += ": " + errno_text(sys_errno);
  return text;
}

int Error::to_errno() const {
  if (sys_errno != 0) return sys_errno;
  switch (code) {
    case Errc::OutOfRange:
    case Errc::Unaligned:
    case Errc::InvalidArgument:
    case Errc::RefcountOverflow:
      return EINVAL;
    case Errc::ReadOnly: return EROFS;
    case Errc::Unsupported: return EOPNOTSUPP;
    case Errc::QueueFull: return EAGAIN;
    case Errc::TooLarge: return E2BIG;
    case Errc::Cancelled: return ECANCELED;
    case Errc::ProbeChange: return EPERM;
    case Errc::OutOfMemory: return ENOMEM;
    case Errc::NoSpace: return ENOSPC;
    case Errc::LockConflict: return EAGAIN;
    default: return EIO;
  }
}

}  // namespace tern::block

#include "block/error.h"

#include <array>
#include <cerrno>

#include "base/error.h"

namespace tern::block {
namespace {

using enum ErrorClass;

constexpr std::array kErrcTable = std::to_array<ErrcInfo>({
    {Errc::OpenFailed, "cannot open", ErrorClass::Other, EIO},
    {Errc::NotAFile, "not a regular file or block device", ErrorClass::Other, EIO},
    {Errc::LockConflict, "image is locked by another process", ErrorClass::Other, EAGAIN},
    {Errc::LockFailed, "cannot lock image", ErrorClass::Other, EIO},
    {Errc::UnknownFormat, "unknown image format", ErrorClass::Other, EIO},
    {Errc::ProbedBacking, "the image was probed as QCOW2 and names a backing file; follow it only with image_type=qcow2", ErrorClass::Other, EIO},
    {Errc::OutOfRange, "request past the end of the disk", ErrorClass::BadRequest, EINVAL},
    {Errc::Unaligned, "unaligned request", ErrorClass::Refused, EINVAL},
    {Errc::ReadOnly, "disk is read-only", ErrorClass::Refused, EROFS},
    {Errc::Unsupported, "operation not supported", ErrorClass::Unsupported, EOPNOTSUPP},
    {Errc::QueueFull, "too many requests in flight", ErrorClass::Other, EAGAIN},
    {Errc::InvalidArgument, "invalid argument", ErrorClass::BadRequest, EINVAL},
    {Errc::ReadFailed, "read failed", ErrorClass::Io, EIO},
    {Errc::WriteFailed, "write failed", ErrorClass::Io, EIO},
    {Errc::FlushFailed, "flush failed", ErrorClass::Io, EIO},
    {Errc::DiscardFailed, "discard failed", ErrorClass::Io, EIO},
    {Errc::WriteZeroesFailed, "write-zeroes failed", ErrorClass::Io, EIO},
    {Errc::ShortTransfer, "short transfer", ErrorClass::Io, EIO},
    {Errc::AioSetupFailed, "cannot set up Linux AIO", ErrorClass::Io, EIO},
    {Errc::SubmitFailed, "cannot submit AIO request", ErrorClass::Io, EIO},
    {Errc::TooLarge, "request longer than the largest transfer", ErrorClass::Other, E2BIG},
    {Errc::Cancelled, "request cancelled", ErrorClass::Other, ECANCELED},
    {Errc::ProbeChange, "write refused: it would make this probed raw image look like another format (give image_type=raw)", ErrorClass::Refused, EPERM},
    {Errc::OutOfMemory, "cannot allocate a buffer", ErrorClass::Other, ENOMEM},
    {Errc::ShrinkRefused, "shrinking is not supported", ErrorClass::Refused, EIO},
    {Errc::ResizeFailed, "resize failed", ErrorClass::Other, EIO},
    {Errc::BadHeader, "invalid image header", ErrorClass::Image, EIO},
    {Errc::UnsupportedVersion, "unsupported image version", ErrorClass::Other, EIO},
    {Errc::UnsupportedFeature, "unsupported image feature", ErrorClass::Other, EIO},
    {Errc::BackingRefused, "image has a backing file; enable it with backing_files=on", ErrorClass::Refused, EIO},
    {Errc::BackingFailed, "cannot open backing file", ErrorClass::Image, EIO},
    {Errc::BackingLoop, "backing chain loops", ErrorClass::Other, EIO},
    {Errc::BackingChainTooDeep, "backing chain too deep (at most 16 backing files)", ErrorClass::Other, EIO},
    {Errc::BackingIsDevice, "backing file is a block device (not allowed unless asked for)", ErrorClass::Other, EIO},
    {Errc::CorruptImage, "image is corrupt", ErrorClass::Image, EIO},
    {Errc::RefcountOverflow, "refcount overflow", ErrorClass::Image, EINVAL},
    {Errc::ReadingMetadata, "reading metadata failed", ErrorClass::Image, EIO},
    {Errc::WritingMetadata, "writing metadata failed", ErrorClass::Image, EIO},
    {Errc::ReadingHeader, "reading header failed", ErrorClass::Image, EIO},
    {Errc::WritingHeader, "writing header failed", ErrorClass::Image, EIO},
    {Errc::SyncingHeader, "syncing header failed", ErrorClass::Image, EIO},
    {Errc::Decompression, "decompression failed", ErrorClass::Image, EIO},
    {Errc::NoSpace, "no space left", ErrorClass::NoSpace, ENOSPC},
    {Errc::Internal, "internal error", ErrorClass::Other, EIO},
});

constexpr bool rows_in_order() {
  for (size_t i = 0; i < kErrcTable.size(); ++i) {
    if (static_cast<size_t>(kErrcTable[i].code) != i) return false;
  }
  return true;
}
static_assert(kErrcTable.size() == static_cast<size_t>(Errc::Internal) + 1, "one row per Errc");
static_assert(rows_in_order(), "rows in the order of the enum");

}  // namespace

const ErrcInfo& errc_info(Errc code) {
  auto i = static_cast<size_t>(code);
  return i < kErrcTable.size() ? kErrcTable[i] : kErrcTable.back();
}

const char* errc_name(Errc code) { return errc_info(code).text; }

std::string Error::message() const {
  std::string text = errc_name(code);
  if (!detail.empty()) text += ": " + detail;
  if (sys_errno != 0) text += ": " + errno_text(sys_errno);
  return text;
}

int Error::to_errno() const { return sys_errno != 0 ? sys_errno : errc_info(code).default_errno; }

ErrorClass Error::error_class() const {
  if (sys_errno == ENOSPC || sys_errno == EDQUOT) return ErrorClass::NoSpace;
  return errc_info(code).error_class;
}

}  // namespace tern::block

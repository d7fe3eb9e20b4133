// The disk interface: every image format (raw, raw_async, qcow2) is a
// DiskFile, and every virtio-blk queue drives one IoContext of it from its
// own epoll loop. Nothing here knows about virtio.
//
// Lifecycle and threads:
//   - A DiskFile is opened by open_disk() (block/open.h) and owned by whoever
//     opened it (the virtio-blk device, tern-img). size(), resize(),
//     topology() and capabilities() may be called from any thread.
//   - make_io_context() creates one IoContext per queue. An IoContext is used
//     by exactly one thread at a time (its queue's loop); it must not outlive
//     its DiskFile.
//   - Completion protocol: the loop epoll-waits on completion_fd(); when it is
//     readable, drain() appends every finished request. Requests finish in any
//     order. Every request accepted by submit() produces exactly one
//     Completion carrying its cookie.
#pragma once

#include <sys/uio.h>

#include <cstdint>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include "block/error.h"

namespace tern::block {

enum class Op : uint8_t { Read, Write, Flush, Discard, WriteZeroes };

// The longest read or write one request may carry. Every backend refuses a
// longer one with Errc::TooLarge before doing anything, so no request can
// make a backend allocate or hold a lock in proportion to its size beyond
// this; devices advertise limits within it (virtio-blk: seg_max * size_max).
inline constexpr uint64_t kMaxTransferBytes = uint64_t{1} << 30;

struct Request {
  Op op = Op::Read;
  uint64_t offset = 0;  // bytes from the start of the disk
  // Read/Write: the data buffers. The iovec array itself need only live
  // during submit(); the memory it points to must stay valid until the
  // request completes.
  std::span<const iovec> iov{};
  uint64_t length = 0;  // Discard/WriteZeroes: bytes affected
  bool may_unmap = false;  // WriteZeroes: deallocating is allowed
  uint64_t cookie = 0;  // caller's tag, returned in the Completion
};

struct Completion {
  uint64_t cookie = 0;
  Result<void> status;  // success, or why the request failed
};

struct Topology {
  uint32_t logical_block_size = 512;   // smallest addressable unit
  uint32_t physical_block_size = 512;  // preferred write granularity
  uint32_t buffer_alignment = 1;       // required iovec alignment (O_DIRECT)
  uint32_t discard_granularity = 0;    // 0 when discard is unsupported
};

struct Capabilities {
  bool read_only = false;
  bool discard = false;
  bool write_zeroes = false;
};

class IoContext {
 public:
  virtual ~IoContext() = default;

  // Readable (eventfd) when completions are waiting to be drained.
  virtual int completion_fd() const = 0;

  // Queues a request. An error means the request was not accepted and will
  // not produce a Completion (Errc::QueueFull when depth() are in flight).
  [[nodiscard]] virtual Result<void> submit(const Request& request) = 0;

  // Appends every completed request to `out` and clears completion_fd()'s
  // readiness. Never blocks.
  virtual void drain(std::vector<Completion>& out) = 0;

  // Maximum number of requests in flight.
  virtual uint32_t depth() const = 0;

  // For a reset or shutdown: every accepted request that has not started
  // completes soon with Errc::Cancelled, and a long one that has started may
  // stop early (its completion says so), so that tearing the context down
  // does not wait behind a queue of large requests. The completions still
  // arrive through drain(), one per request. Submit nothing afterwards.
  virtual void cancel() {}
};

class DiskFile {
 public:
  virtual ~DiskFile() = default;

  virtual std::string_view format_name() const = 0;  // "raw", "qcow2"
  // Virtual size in bytes, as the guest sees it. Any thread.
  virtual uint64_t size() const = 0;
  // Grows the disk to `new_size` bytes. Safe while IoContexts are open; every
  // context sees the new size afterwards. Shrinking is Errc::ShrinkRefused.
  [[nodiscard]] virtual Result<void> resize(uint64_t new_size) = 0;
  virtual Topology topology() const = 0;
  virtual Capabilities capabilities() const = 0;
  [[nodiscard]] virtual Result<std::unique_ptr<IoContext>> make_io_context(uint32_t depth) = 0;
  // Writes back cached state and syncs (qcow2 also clears its dirty bit).
  // The destructor does the same on a best-effort basis.
  [[nodiscard]] virtual Result<void> close() = 0;
  // Bytes the image occupies on the host ("disk size" in tern-img info).
  virtual uint64_t allocated_bytes() const = 0;
  // Appends every descriptor open on a file of this disk (the image, a
  // second O_DIRECT descriptor, each backing file). Fixed from open to
  // close. The sandbox forbids write() on them to every thread, so that
  // only the threads whose job is disk I/O can change an image
  // (docs/SECURITY.md, "Sandbox").
  virtual void image_fds(std::vector<int>& out) const = 0;
};

}  // namespace tern::block

// The one owner of a Linux native AIO context (io_setup(2)) in the block
// layer: raw's aio=native context and the QCOW2 data path both submit
// through an AioRing and reap from it. Completions are announced on an
// eventfd through IOCB_FLAG_RESFD, so a context's owner polls one fd.
#pragma once

#include <linux/aio_abi.h>
#include <sys/uio.h>

#include <cstdint>
#include <span>

#include "block/error.h"
#include "block/io/transfer.h"

namespace tern::block::io {

class AioRing {
 public:
  // An AIO context with room for `slots` requests in the kernel at once;
  // Errc::AioSetupFailed when the kernel refuses one (aio-max-nr reached,
  // or seccomp), which callers may answer with a thread pool.
  [[nodiscard]] static Result<AioRing> create(uint32_t slots);

  AioRing() = default;  // no context: valid() is false
  AioRing(AioRing&& other) noexcept;
  AioRing& operator=(AioRing&& other) noexcept;
  AioRing(const AioRing&) = delete;
  AioRing& operator=(const AioRing&) = delete;
  // io_destroy(2) waits for every request still in the kernel, so no
  // completion writes into a buffer after the ring is gone.
  ~AioRing();

  bool valid() const { return ctx_ != 0; }

  // A vectored read or write of `iov` (which must outlive the request) at
  // `offset` of `fd`, announced on `resfd`; `data` comes back in the event.
  static void prepare_rw(iocb& cb, Direction dir, int fd, std::span<const iovec> iov, uint64_t offset,
                         int resfd, uint64_t data);
  // fdatasync(2) of `fd` as an AIO request.
  static void prepare_fdsync(iocb& cb, int fd, int resfd, uint64_t data);

  // Hands `cbs` to the kernel; returns how many it took, from the front
  // (EINTR retried). The errno of a call that took none is
  // Errc::SubmitFailed's; EAGAIN means the ring is full.
  [[nodiscard]] Result<size_t> submit(std::span<iocb* const> cbs);

  // Collects completed requests into `events` without waiting; returns how
  // many (0 when none, or on an error of io_getevents itself).
  size_t reap(std::span<io_event> events);
  // Waits until at least one request completes, then collects like reap().
  // An error other than EINTR is returned as -errno.
  long wait(std::span<io_event> events);

 private:
  explicit AioRing(aio_context_t ctx) : ctx_(ctx) {}
  aio_context_t ctx_ = 0;
};

}  // namespace tern::block::io

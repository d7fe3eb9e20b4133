#include "block/io/aio.h"

#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <utility>

namespace tern::block::io {

Result<AioRing> AioRing::create(uint32_t slots) {
  aio_context_t ctx = 0;
  if (::syscall(SYS_io_setup, slots, &ctx) != 0) return fail(Errc::AioSetupFailed, errno);
  return AioRing(ctx);
}

AioRing::AioRing(AioRing&& other) noexcept : ctx_(std::exchange(other.ctx_, 0)) {}

AioRing& AioRing::operator=(AioRing&& other) noexcept {
  if (this != &other) {
    if (ctx_ != 0) ::syscall(SYS_io_destroy, ctx_);
    ctx_ = std::exchange(other.ctx_, 0);
  }
  return *this;
}

AioRing::~AioRing() {
  if (ctx_ != 0) ::syscall(SYS_io_destroy, ctx_);
}

void AioRing::prepare_rw(iocb& cb, Direction dir, int fd, std::span<const iovec> iov, uint64_t offset,
                         int resfd, uint64_t data) {
  cb = iocb{};
  cb.aio_data = data;
  cb.aio_lio_opcode = dir == Direction::Read ? IOCB_CMD_PREADV : IOCB_CMD_PWRITEV;
  cb.aio_fildes = static_cast<uint32_t>(fd);
  cb.aio_buf = reinterpret_cast<uint64_t>(iov.data());
  cb.aio_nbytes = iov.size();
  cb.aio_offset = static_cast<int64_t>(offset);
  cb.aio_flags = IOCB_FLAG_RESFD;
  cb.aio_resfd = static_cast<uint32_t>(resfd);
}

void AioRing::prepare_fdsync(iocb& cb, int fd, int resfd, uint64_t data) {
  cb = iocb{};
  cb.aio_data = data;
  cb.aio_lio_opcode = IOCB_CMD_FDSYNC;
  cb.aio_fildes = static_cast<uint32_t>(fd);
  cb.aio_flags = IOCB_FLAG_RESFD;
  cb.aio_resfd = static_cast<uint32_t>(resfd);
}

Result<size_t> AioRing::submit(std::span<iocb* const> cbs) {
  size_t taken = 0;
  while (taken < cbs.size()) {
    long n = ::syscall(SYS_io_submit, ctx_, static_cast<long>(cbs.size() - taken),
                       const_cast<iocb**>(cbs.data() + taken));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      if (taken > 0) break;
      return fail(Errc::SubmitFailed, n < 0 ? errno : EAGAIN);
    }
    taken += static_cast<size_t>(n);
  }
  return taken;
}

size_t AioRing::reap(std::span<io_event> events) {
  for (;;) {
    timespec zero{};
    long n = ::syscall(SYS_io_getevents, ctx_, 0, static_cast<long>(events.size()), events.data(), &zero);
    if (n < 0 && errno == EINTR) continue;
    return n < 0 ? 0 : static_cast<size_t>(n);
  }
}

long AioRing::wait(std::span<io_event> events) {
  for (;;) {
    long n = ::syscall(SYS_io_getevents, ctx_, 1, static_cast<long>(events.size()), events.data(), nullptr);
    if (n < 0 && errno == EINTR) continue;
    return n < 0 ? -errno : n;
  }
}

}  // namespace tern::block::io

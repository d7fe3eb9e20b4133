#include "base/event_fd.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cstdlib>

namespace tern {

SysResult<EventFd> EventFd::create(unsigned initial) {
  int fd = ::eventfd(initial, EFD_CLOEXEC | EFD_NONBLOCK);
  if (fd < 0) return std::unexpected(SysError::from_errno("eventfd"));
  return EventFd(UniqueFd(fd));
}

void EventFd::signal() const {
  uint64_t one = 1;
  for (;;) {
    ssize_t n = ::write(fd_.get(), &one, sizeof one);
    if (n == sizeof one) return;
    if (n < 0 && errno == EINTR) continue;
    // EAGAIN means the counter is at its maximum: the reader is already due
    // to wake, so nothing is lost.
    if (n < 0 && errno == EAGAIN) return;
    std::abort();  // a broken eventfd is an internal invariant failure
  }
}

uint64_t EventFd::consume() const {
  uint64_t value = 0;
  for (;;) {
    ssize_t n = ::read(fd_.get(), &value, sizeof value);
    if (n == sizeof value) return value;
    if (n < 0 && errno == EINTR) continue;
    return 0;  // EAGAIN: nothing pending
  }
}

}  // namespace tern

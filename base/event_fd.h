// EventFd: an owned, non-blocking, close-on-exec eventfd used to wake epoll
// loops (queue notifications, completions, stop requests).
#pragma once

#include <cstdint>

#include "base/error.h"
#include "base/unique_fd.h"

namespace tern {

class EventFd {
 public:
  static SysResult<EventFd> create(unsigned initial = 0);

  int fd() const { return fd_.get(); }
  // Adds 1 to the counter; safe from any thread.
  void signal() const;
  // Reads and resets the counter; returns 0 when it was already zero.
  uint64_t consume() const;

 private:
  explicit EventFd(UniqueFd fd) : fd_(std::move(fd)) {}
  UniqueFd fd_;
};

}  // namespace tern

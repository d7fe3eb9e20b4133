// UniqueFd: the one owner of a file descriptor. Move-only; closes on
// destruction. Nothing else in Tern calls close() on a descriptor.
#pragma once

#include <unistd.h>

#include <utility>

namespace tern {

class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  ~UniqueFd() { reset(); }

  UniqueFd(UniqueFd&& other) noexcept : fd_(other.release()) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    if (this != &other) reset(other.release());
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  explicit operator bool() const { return valid(); }

  int release() { return std::exchange(fd_, -1); }
  void reset(int fd = -1) {
    int old = std::exchange(fd_, fd);
    // close() errors on a descriptor we own cannot be acted upon here; data
    // integrity is the job of explicit flush/fsync calls, which are checked.
    if (old >= 0) ::close(old);
  }

 private:
  int fd_ = -1;
};

}  // namespace tern

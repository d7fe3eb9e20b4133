// SysError: a failed system call, named by the call and carrying errno.
// Layers wrap it into their own precise error enums; it is turned into a
// message only at the program's edge.
#pragma once

#include <cerrno>
#include <expected>
#include <string>

namespace tern {

struct SysError {
  const char* call = "";  // static string: the syscall or ioctl that failed
  int err = 0;            // errno value

  static SysError from_errno(const char* call) { return SysError{call, errno}; }
  std::string message() const;
};

template <class T>
using SysResult = std::expected<T, SysError>;

// Human text for an errno value ("No such file or directory").
std::string errno_text(int err);

}  // namespace tern

#include "base/error.h"

#include <cstring>

namespace tern {

std::string errno_text(int err) {
  char buf[128];
  // GNU strerror_r returns a pointer that may or may not be buf.
  return std::string(strerror_r(err, buf, sizeof buf));
}

std::string SysError::message() const {
  return std::string(call) + ": " + errno_text(err);
}

}  // namespace tern

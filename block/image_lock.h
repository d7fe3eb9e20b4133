// Image locking: on open, an OFD byte-range lock
// (F_OFD_SETLK) from offset 0 over every byte the image has or will have —
// shared for read-only opens, exclusive for writable ones. OFD locks belong
// to the open file description, so they conflict between processes and
// between two opens in one process alike, and vanish when the fd closes.
#pragma once

#include <string>

#include "block/error.h"

namespace tern::block {

// Errc::LockConflict (message names the file and the lock that holds it) or
// Errc::LockFailed.
[[nodiscard]] Result<void> lock_image(int fd, bool exclusive, const std::string& path);

}  // namespace tern::block

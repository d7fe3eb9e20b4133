// The image lock call, behind one function so it can switch to the block
// layer's shared helper (block/file_lock.h) when that lands: an OFD
// byte-range lock over the whole file, shared for read-only opens and
// exclusive for writable ones (SPEC section 4, "Locking").
#pragma once

#include <string>

#include "block/error.h"

namespace tern::block::qcow2 {

[[nodiscard]] Result<void> lock_image(int fd, bool exclusive, const std::string& path);

}  // namespace tern::block::qcow2

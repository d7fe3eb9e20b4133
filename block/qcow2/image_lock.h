// QCOW2 images (and their backing files) take the block layer's image lock.
#pragma once

#include "block/image_lock.h"

namespace tern::block::qcow2 {

using block::lock_image;

}  // namespace tern::block::qcow2

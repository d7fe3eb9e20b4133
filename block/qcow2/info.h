// read_image_info() (block/image.h), written here with the header parser.
#pragma once

#include "block/image.h"

namespace tern::block::qcow2 {

// The block-internal code and tests name them qcow2::.
using block::ImageInfo;
using block::read_image_info;

}  // namespace tern::block::qcow2

// Creating QCOW2 images (tern-img create -f qcow2).
#pragma once

#include <cstdint>
#include <string>

#include "block/error.h"
#include "block/image.h"
#include "block/qcow2/format.h"

namespace tern::block::qcow2 {

// create_image() and set_backing_file() (block/image.h), written here with
// the header writer; the block-internal code and tests name them qcow2::.
using block::CreateOptions;
using block::create_image;
using block::set_backing_file;

}  // namespace tern::block::qcow2

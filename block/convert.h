// convert_image(): copies any image Tern opens (following backing files, as
// qemu-img does) into a new raw or QCOW2 image (tern-img convert). Zero
// ranges are skipped, so the output stays sparse.
#pragma once

#include <functional>
#include <string>

#include "block/error.h"
#include "block/open.h"

namespace tern::block {

struct ConvertOptions {
  std::string input;
  std::string output;
  ImageType output_type = ImageType::Raw;  // Raw or Qcow2
  // Called with the fraction done (0..1) as the copy advances.
  std::function<void(double)> progress;
};

[[nodiscard]] Result<void> convert_image(const ConvertOptions& options);

}  // namespace tern::block

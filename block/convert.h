// convert_image(): copies any image Tern opens (following backing files, as
// qemu-img does) into a new raw or QCOW2 image (tern-img convert). Zero
// ranges are skipped, so the output stays sparse. With a backing file the
// output is an overlay holding the clusters that differ from it.
#pragma once

#include <functional>
#include <string>

#include "block/error.h"
#include "block/open.h"
#include "block/qcow2/create.h"

namespace tern::block {

struct ConvertOptions {
  std::string input;
  ImageType input_type = ImageType::Auto;
  std::string output;
  ImageType output_type = ImageType::Raw;  // Raw or Qcow2
  // Qcow2 output: its creation options (cluster size, compat, compression
  // type, refcount width; path and size are set here) and a backing file
  // (then only the clusters whose contents differ from it are written).
  qcow2::CreateOptions qcow2;
  // Qcow2 output: every cluster written compressed (Engine::write_compressed).
  bool compress = false;
  // Called with the fraction done (0..1) as the copy advances.
  std::function<void(double)> progress;
};

[[nodiscard]] Result<void> convert_image(const ConvertOptions& options);

}  // namespace tern::block

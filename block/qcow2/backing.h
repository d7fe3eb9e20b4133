// Backing: the read-only image under a QCOW2 overlay (raw or QCOW2). Reads
// past its virtual size return zeros; a read spanning that end is split.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "block/error.h"

namespace tern::block::qcow2 {

class Backing {
 public:
  virtual ~Backing() = default;
  virtual uint64_t size() const = 0;
  // Fills `buf` from `offset`: the part below size() from the image, the
  // rest zeros. Called with the overlay's engine serialized.
  [[nodiscard]] Result<void> read(uint64_t offset, std::span<uint8_t> buf);

 protected:
  [[nodiscard]] virtual Result<void> read_inside(uint64_t offset, std::span<uint8_t> buf) = 0;
};

// Opens the backing file named in an image header: relative names are
// relative to the overlay's directory; the format is `format` ("raw",
// "qcow2") or, when empty, probed. allow_backing applies down the chain.
[[nodiscard]] Result<std::unique_ptr<Backing>> open_backing(const std::string& overlay_path,
                                                            const std::string& name,
                                                            const std::string& format);

}  // namespace tern::block::qcow2

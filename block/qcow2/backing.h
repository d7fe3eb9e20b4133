// Backing: the read-only image under a QCOW2 overlay (raw or QCOW2). Reads
// past its virtual size return zeros; a read spanning that end is split.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "block/error.h"

namespace tern::block::qcow2 {

class Backing {
 public:
  virtual ~Backing() = default;
  virtual uint64_t size() const = 0;
  // Fills `buf` from `offset`: the part below size() from the image, the
  // rest zeros. Thread-safe: the overlay calls it from concurrent shared
  // sections (docs/qcow2.md, "Concurrency").
  [[nodiscard]] Result<void> read(uint64_t offset, std::span<uint8_t> buf);
  // The descriptors open on this file and the files below it (DiskFile::image_fds).
  virtual void image_fds(std::vector<int>& out) const = 0;

 protected:
  [[nodiscard]] virtual Result<void> read_inside(uint64_t offset, std::span<uint8_t> buf) = 0;
};

// At most this many backing files under the image that is opened.
inline constexpr size_t kMaxBackingDepth = 16;

// One image of a chain: identity by (device, inode), name for errors.
struct ChainLink {
  dev_t dev = 0;
  ino_t ino = 0;
  bool known = false;  // false for a file without a descriptor (tests)
  std::string path;
};
using BackingChain = std::vector<ChainLink>;

// The identity of the open file `fd` (not known when fd < 0 or fstat fails).
ChainLink chain_link(int fd, const std::string& path);

struct BackingRules {
  BackingChain chain;  // the overlay that names the file, and every image above it
  bool allow_block_device = false;
};

// Opens the backing file named in an image header (docs/qcow2.md,
// "Backing chains"): relative names are relative to the overlay's
// directory; the format is `format` ("raw", "qcow2") or, when empty,
// probed. Refused: a file already in the chain (BackingLoop), one more than
// kMaxBackingDepth below the top (BackingChainTooDeep), a block device
// unless allowed (BackingIsDevice), anything else not a regular file
// (NotAFile). allow_backing applies down the chain.
[[nodiscard]] Result<std::unique_ptr<Backing>> open_backing(const std::string& overlay_path,
                                                            const std::string& name,
                                                            const std::string& format,
                                                            const BackingRules& rules = {});

}  // namespace tern::block::qcow2

// Chain: an image and every backing file under it, each opened on its own,
// for the tools that look at the layers one by one (tern-img map, compare,
// commit, rebase, measure, convert -B). Layer 0 is the image named; layer
// i + 1 is layer i's backing file. Opening layer 0 follows the whole chain
// with the rules of every open (docs/qcow2.md, "Backing chains": at most
// kMaxBackingDepth backing files, no loops, block devices only when
// allowed), so the later layers are opened only once those rules held.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "block/disk.h"
#include "block/error.h"
#include "block/open.h"

namespace tern::block {

// ---- The chain by its headers ----

// One backing file of a chain.
struct BackingFile {
  std::string path;                 // resolved against the directory of the image naming it
  ImageType type = ImageType::Raw;  // as that image recorded it, else probed
};

// Where a walk starts, and what it allows beyond the rules of every open.
struct BackingWalk {
  std::string image;  // the QCOW2 image on top (a regular file or block device)
  bool allow_block_device = false;  // for the backing files (OpenOptions::allow_block_backing)
  // Set: walk as if `image` named this backing file (relative to its
  // directory; "" for none) in `backing_format` ("raw", "qcow2", or ""
  // for probed) instead of what its header names: the chain tern-img
  // rebase would make, checked before it writes the header.
  std::optional<std::string> backing_file;
  std::string backing_format;
};

// The backing files under walk.image, top first, read from their headers
// by the rules every open follows (docs/qcow2.md, "Backing chains": names
// relative to the naming image's directory, at most 16 backing files, no
// loop, a block device only when allowed, nothing else but regular files,
// a file recorded as raw ends the chain), which block/qcow2/backing.cpp
// owns for both. Each file that meets the rules is appended to `files`
// before its own header is read, so after the first broken rule (the
// error) `files` holds the files above it. For the checks that do not
// open the chain as a disk: the sandbox's Landlock grants, tern-img rebase.
[[nodiscard]] Result<void> walk_backing_chain(const BackingWalk& walk, std::vector<BackingFile>& files);

// What a byte range holds, seen from the top of the chain, in qemu's
// block-status terms (qemu-img map prints these fields).
struct ChainExtent {
  uint64_t start = 0;
  uint64_t length = 0;
  size_t depth = 0;          // the layer that decided (0: the top)
  bool present = false;      // allocated in that layer (false: reads as zeros, nothing allocated)
  bool zero = false;         // reads as zeros
  bool data = false;         // holds data (compressed clusters too)
  bool compressed = false;   // a QCOW2 compressed cluster
  bool has_offset = false;   // `offset` is valid
  uint64_t offset = 0;       // in that layer's file
};

struct ChainOptions {
  ImageType top_type = ImageType::Auto;  // layer 0's format (probed when Auto)
  bool writable_top = false;  // layer 0 opened read-write (its backing files stay read-only)
  bool allow_block_backing = false;
  bool lock = true;  // layer 0's image lock; backing files are not locked (as in open_disk)
};

class Chain {
 public:
  [[nodiscard]] static Result<Chain> open(const std::string& path, const ChainOptions& options = {});
  Chain(Chain&&) noexcept;
  Chain& operator=(Chain&&) noexcept;
  ~Chain();

  size_t layers() const { return layers_.size(); }
  // The file of layer i: the top as given, backing files resolved against
  // their overlay's directory (the names qemu-img map prints).
  const std::string& path(size_t layer) const;
  // "raw" or "qcow2".
  std::string_view format(size_t layer) const;
  uint64_t size(size_t layer) const;
  // Layer i as a disk (with its own backing files below it).
  DiskFile& disk(size_t layer);

  // What layer i alone holds at `offset` (below size(i)): present/zero/data
  // as if it had no backing file, depth = i. At most `max_length` bytes,
  // as far as the range is alike: a QCOW2 layer walks its L1/L2 tables
  // (Engine::extent_status), a raw one asks the file for its holes, so the
  // cost of a walk over an image follows its allocated extents, not its
  // size.
  [[nodiscard]] Result<ChainExtent> layer_status(size_t layer, uint64_t offset, uint64_t max_length);
  // What the chain from layer `top` down shows at `offset` (below
  // size(top)), the way qemu-img map walks it: down through unallocated
  // ranges to the first layer that has the range allocated, or the last one.
  [[nodiscard]] Result<ChainExtent> status(uint64_t offset, uint64_t max_length, size_t top = 0);

  // Reads layer i's view (with its backing files) of [offset, offset + size).
  [[nodiscard]] Result<void> read(size_t layer, uint64_t offset, std::span<uint8_t> out);
  // Writes through layer 0 (writable_top).
  [[nodiscard]] Result<void> write(uint64_t offset, std::span<const uint8_t> data);
  [[nodiscard]] Result<void> write_zeroes(uint64_t offset, uint64_t length);
  // Closes every layer (layer 0's metadata written back and synced).
  [[nodiscard]] Result<void> close();

 private:
  struct Layer;
  Chain();
  std::vector<std::unique_ptr<Layer>> layers_;
};

}  // namespace tern::block

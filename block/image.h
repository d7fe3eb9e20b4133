// QCOW2 image files as files, for the tools: what a header says, making
// an image, pointing it at another backing file, checking its refcounts.
// The public face of block/qcow2/, which only block/ includes (the
// layering check, cmake/check_layering.cmake); opening an image as a disk
// is open_disk (block/open.h), its backing chain block/chain.h.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "block/error.h"

namespace tern::block {

namespace qcow2 {
class Engine;
}

// The header fields `tern-img info` shows, as qemu-img info names them.
struct ImageInfo {
  uint64_t virtual_size = 0;
  uint64_t cluster_size = 0;
  std::string compat;            // "0.10" (v2) or "1.1" (v3)
  std::string compression_type;  // "zlib" or "zstd"
  bool lazy_refcounts = false;
  uint32_t refcount_bits = 16;
  bool corrupt = false;
  bool extended_l2 = false;
  bool dirty = false;
  std::string backing_file;    // empty when none
  std::string backing_format;  // empty when not recorded
};

// The header of the QCOW2 image at `path`; Errc::BadHeader ("not a QCOW2
// image" in its detail) for a file of another format.
[[nodiscard]] Result<ImageInfo> read_image_info(const std::string& path);

// The values are the header's compression_type byte (qcow2.txt).
enum class CompressionType : uint8_t { Zlib = 0, Zstd = 1 };

// A new QCOW2 image (tern-img create -f qcow2, and commit's emptied overlay).
struct CreateOptions {
  std::string path;
  uint64_t size = 0;  // 0 with a backing file: the backing file's size
  uint32_t cluster_size = 65536;
  uint32_t refcount_bits = 16;
  uint32_t version = 3;  // compat=1.1 -> 3, compat=0.10 -> 2
  CompressionType compression_type = CompressionType::Zlib;
  std::string backing_file;
  std::string backing_format;  // "raw", "qcow2" or empty
};

// Writes a new image: header cluster, a one-cluster refcount table and one
// refcount block, then grows it to `size` through Engine::resize (the same
// path as tern-img resize and live grow).
[[nodiscard]] Result<void> create_image(const CreateOptions& options);

// Rewrites the header cluster of a cleanly closed image at `path` to name
// another backing file (empty: none) and format (tern-img rebase, the
// header part). The extension area is written anew: the backing-format
// extension only, and the autoclear bits cleared (qcow2.txt: a writer that
// does not keep an extension's data clears its autoclear bit). Check the
// new chain first (walk_backing_chain, block/chain.h).
[[nodiscard]] Result<void> set_backing_file(const std::string& path, const std::string& name,
                                            const std::string& format);

enum class Repair { None, Leaks, All };

// check() keeps the text of this many findings; the rest are only counted.
inline constexpr size_t kMaxCheckMessages = 100;

// What a check found, in qemu-img check's terms.
struct CheckResult {
  uint64_t corruptions = 0;
  uint64_t leaks = 0;
  uint64_t corruptions_fixed = 0;
  uint64_t leaks_fixed = 0;
  uint64_t allocated_clusters = 0;
  uint64_t total_clusters = 0;
  uint64_t compressed_clusters = 0;
  uint64_t fragmented_clusters = 0;
  uint64_t image_end_offset = 0;
  bool incomplete = false;            // could not check everything
  std::vector<std::string> messages;  // one line per finding, the first kMaxCheckMessages
  uint64_t messages_dropped = 0;      // findings past those (counted above all the same)
};

// A QCOW2 image open for tern-img check: check() as often as the verb
// needs (a repair is checked again), then close(). Opened read-only for
// Repair::None; otherwise read-write, a corrupt image included.
class ImageCheck {
 public:
  [[nodiscard]] static Result<ImageCheck> open(const std::string& path, Repair repair);
  ImageCheck(ImageCheck&&) noexcept;
  ImageCheck& operator=(ImageCheck&&) noexcept;
  ~ImageCheck();

  [[nodiscard]] Result<CheckResult> check(Repair repair);
  // Writes back what a repair changed and closes the image.
  [[nodiscard]] Result<void> close();

 private:
  explicit ImageCheck(std::unique_ptr<qcow2::Engine> engine);
  std::unique_ptr<qcow2::Engine> engine_;
};

}  // namespace tern::block

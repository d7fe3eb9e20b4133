// open_disk(): probes the image format and returns the owning DiskFile.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "block/disk.h"

namespace tern::block {

enum class ImageType { Auto, Raw, Qcow2 };

// How a raw image performs I/O. Sync: pread/pwrite in submit() (the "raw"
// backend). Native: Linux AIO with an eventfd (the "raw_async" backend),
// falling back to Threads where io_setup is unavailable. Threads: a worker
// pool signalling an eventfd.
enum class AioMode { Sync, Native, Threads };

struct OpenOptions {
  std::string path;
  ImageType type = ImageType::Auto;
  bool read_only = false;
  bool direct = false;         // O_DIRECT
  bool lock = true;            // OFD byte-range lock over the image
  bool allow_backing = false;  // backing_files=on
  // A QCOW2 backing file may be a block device (docs/qcow2.md, "Backing
  // chains"); off, a hostile image cannot make tern read a host device.
  bool allow_block_backing = false;
  AioMode aio = AioMode::Native;
  // With type Auto: whether a QCOW2 image found by probing may follow the
  // backing file its header names. tern-img does (as qemu-img); the VMM
  // does not (docs/SECURITY.md, "Probed images"): a header it did not ask
  // for may have been written by a guest into what was once its raw disk,
  // so it must not make tern open a host file. Off, such an image is
  // Errc::ProbedBacking, whose message names image_type=qcow2.
  bool follow_probed_backing = true;
};

// How many leading bytes the probe looks at; a raw image found by probing
// refuses writes that would change what they say (RawDisk).
inline constexpr size_t kProbeBytes = 512;

// The format the probe sees in an image's first bytes (up to kProbeBytes):
// QCOW2 for its magic, Raw for anything else.
ImageType probe_bytes(std::span<const uint8_t> head);

// Format names, the one mapping for the command lines and the tools:
// "raw", "qcow2" and "auto" (also the empty name: the probe decides);
// nullopt for any other name.
std::optional<ImageType> parse_image_type(std::string_view name);

// The path of a backing file as an image names it: a relative name is
// relative to the directory of the image that names it (as QEMU reads it).
std::string resolve_backing_name(const std::string& overlay_path, const std::string& name);

[[nodiscard]] Result<std::unique_ptr<DiskFile>> open_disk(const OpenOptions& options);

}  // namespace tern::block

// open_disk(): probes the image format and returns the owning DiskFile.
#pragma once

#include <memory>
#include <string>

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
};

[[nodiscard]] Result<std::unique_ptr<DiskFile>> open_disk(const OpenOptions& options);

}  // namespace tern::block

#include "block/chain.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "base/unique_fd.h"
#include "block/io/wait.h"
#include "block/open.h"
#include "block/qcow2/engine.h"
#include "block/qcow2/info.h"
#include "block/qcow2/qcow2_disk.h"

namespace tern::block {

struct Chain::Layer {
  std::string path;
  std::unique_ptr<DiskFile> disk;
  std::unique_ptr<IoContext> io;
  qcow2::Qcow2Disk* qcow2 = nullptr;  // disk, when it is QCOW2
  UniqueFd raw_fd;                    // a raw layer's file, for SEEK_DATA/SEEK_HOLE
  uint64_t cluster_size = 0;
};


Chain::Chain() = default;
Chain::Chain(Chain&&) noexcept = default;
Chain& Chain::operator=(Chain&&) noexcept = default;
Chain::~Chain() = default;

namespace {

// Layer i of a chain, opened as a disk (read-only below the top).
Result<std::unique_ptr<DiskFile>> open_layer(const std::string& path, ImageType type, size_t i,
                                             const ChainOptions& options) {
  OpenOptions o;
  o.path = path;
  o.type = type;
  o.read_only = !(i == 0 && options.writable_top);
  // Backing files are read without a lock, as when an overlay opens them.
  o.lock = i == 0 && options.lock;
  o.allow_backing = true;
  o.allow_block_backing = options.allow_block_backing;
  o.aio = AioMode::Sync;
  return open_disk(o);
}

}  // namespace

Result<Chain> Chain::open(const std::string& top, const ChainOptions& options) {
  Chain chain;
  // Layer 0 first: opening it follows the whole chain by the rules, so the
  // walk below finds the files the open did.
  std::vector<BackingFile> below;
  for (size_t i = 0;; ++i) {
    const std::string& path = i == 0 ? top : below[i - 1].path;
    auto layer = std::make_unique<Layer>();
    layer->path = path;
    auto disk = open_layer(path, i == 0 ? options.top_type : below[i - 1].type, i, options);
    if (!disk) return std::unexpected(disk.error());
    layer->disk = std::move(*disk);
    auto io = layer->disk->make_io_context(1);
    if (!io) return std::unexpected(io.error());
    layer->io = std::move(*io);
    const bool qcow2 = layer->disk->format_name() == "qcow2";
    if (qcow2) {
      layer->qcow2 = static_cast<qcow2::Qcow2Disk*>(layer->disk.get());
      auto info = qcow2::read_image_info(path);
      if (!info) return std::unexpected(info.error());
      layer->cluster_size = info->cluster_size;
    } else {
      int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
      if (fd < 0) return fail(Errc::OpenFailed, errno, path);
      layer->raw_fd = UniqueFd(fd);
    }
    chain.layers_.push_back(std::move(layer));
    if (i == 0 && qcow2) {
      BackingWalk walk;
      walk.image = top;
      walk.allow_block_device = options.allow_block_backing;
      if (auto r = walk_backing_chain(walk, below); !r) return std::unexpected(r.error());
    }
    if (i == below.size()) break;
  }
  return chain;
}

const std::string& Chain::path(size_t i) const { return layers_.at(i)->path; }
std::string_view Chain::format(size_t i) const { return layers_.at(i)->disk->format_name(); }
uint64_t Chain::size(size_t i) const { return layers_.at(i)->disk->size(); }
DiskFile& Chain::disk(size_t i) { return *layers_.at(i)->disk; }

Result<ChainExtent> Chain::layer_status(size_t i, uint64_t offset, uint64_t max_length) {
  Layer& l = *layers_.at(i);
  const uint64_t size = l.disk->size();
  if (offset >= size) return fail(Errc::OutOfRange, 0, l.path);
  ChainExtent e;
  e.start = offset;
  e.depth = i;
  uint64_t limit = std::min(max_length, size - offset);
  if (l.qcow2) {
    const uint64_t in_cluster = offset & (l.cluster_size - 1);
    auto s = l.qcow2->with_engine([&](qcow2::Engine& engine) { return engine.extent_status(offset, limit); });
    if (!s) return std::unexpected(s.error());
    e.length = s->length;
    switch (s->status.kind) {
      case qcow2::ClusterKind::Unallocated:
        break;
      case qcow2::ClusterKind::Zero:
        e.present = e.zero = true;
        if (s->status.host_offset != 0) {
          e.has_offset = true;
          e.offset = s->status.host_offset + in_cluster;
        }
        break;
      case qcow2::ClusterKind::Compressed:
        e.present = e.data = e.compressed = true;
        break;
      case qcow2::ClusterKind::Data:
        e.present = e.data = e.has_offset = true;
        e.offset = s->status.host_offset + in_cluster;
        break;
    }
    return e;
  }
  // Raw: the file's holes read as zeros (qemu's file-posix does the same
  // with SEEK_DATA/SEEK_HOLE); both kinds are allocated, at their offset.
  const int fd = l.raw_fd.get();
  off_t data = ::lseek(fd, static_cast<off_t>(offset), SEEK_DATA);
  uint64_t end;
  if (data < 0 && errno == ENXIO) {
    e.zero = true;  // a hole up to the end of the file
    end = size;
  } else if (data < 0) {
    return fail(Errc::ReadFailed, errno, l.path + ": SEEK_DATA");
  } else if (static_cast<uint64_t>(data) > offset) {
    e.zero = true;
    end = static_cast<uint64_t>(data);
  } else {
    off_t hole = ::lseek(fd, static_cast<off_t>(offset), SEEK_HOLE);
    if (hole < 0) return fail(Errc::ReadFailed, errno, l.path + ": SEEK_HOLE");
    e.data = true;
    end = static_cast<uint64_t>(hole);
  }
  e.present = e.has_offset = true;
  e.offset = offset;
  e.length = std::min(limit, std::max(end, offset + 1) - offset);
  return e;
}

Result<ChainExtent> Chain::status(uint64_t offset, uint64_t max_length, size_t top) {
  if (offset >= size(top)) return fail(Errc::OutOfRange, 0, path(top));
  uint64_t length = std::min(max_length, size(top) - offset);
  for (size_t i = top;; ++i) {
    auto e = layer_status(i, offset, length);
    if (!e) return e;
    if (e->present) return e;
    // Unallocated: the last layer, or a range its backing file does not
    // reach, reads as zeros (present false, decided here).
    if (i + 1 == layers_.size() || offset >= size(i + 1)) {
      e->zero = true;
      return e;
    }
    length = e->length;
  }
}

Result<void> Chain::read(size_t i, uint64_t offset, std::span<uint8_t> out) {
  iovec v{out.data(), out.size()};
  Request r;
  r.op = Op::Read;
  r.offset = offset;
  r.iov = std::span<const iovec>(&v, 1);
  return io::run_to_completion(*layers_.at(i)->io, r);
}

Result<void> Chain::write(uint64_t offset, std::span<const uint8_t> data) {
  iovec v{const_cast<uint8_t*>(data.data()), data.size()};
  Request r;
  r.op = Op::Write;
  r.offset = offset;
  r.iov = std::span<const iovec>(&v, 1);
  return io::run_to_completion(*layers_.at(0)->io, r);
}

Result<void> Chain::write_zeroes(uint64_t offset, uint64_t length) {
  Request r;
  r.op = Op::WriteZeroes;
  r.offset = offset;
  r.length = length;
  return io::run_to_completion(*layers_.at(0)->io, r);
}

Result<void> Chain::close() {
  Result<void> result;
  for (auto& l : layers_) {
    l->io.reset();
    if (auto r = l->disk->close(); !r && result) result = r;
  }
  return result;
}

}  // namespace tern::block

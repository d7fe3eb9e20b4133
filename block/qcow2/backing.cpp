#include "block/qcow2/backing.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <shared_mutex>

#include "block/chain.h"
#include "block/open.h"
#include "block/qcow2/big_endian.h"
#include "block/qcow2/engine.h"
#include "block/qcow2/format.h"
#include "block/qcow2/host_file.h"
#include "block/qcow2/rw_lock.h"

namespace tern::block::qcow2 {
namespace {

class RawBacking final : public Backing {
 public:
  RawBacking(std::unique_ptr<HostFile> file, uint64_t size) : file_(std::move(file)), size_(size) {}
  uint64_t size() const override { return size_; }
  void image_fds(std::vector<int>& out) const override { out.push_back(file_->fd()); }

 protected:
  Result<void> read_inside(uint64_t offset, std::span<uint8_t> buf) override {
    if (auto r = file_->read_at(offset, buf); !r) return fail(Errc::BackingFailed, r.error().sys_errno);
    return {};
  }

 private:
  std::unique_ptr<HostFile> file_;
  uint64_t size_;
};

// The same locking as Qcow2Disk, one level down: lookups of cached tables
// under the shared side, anything that loads a table under the exclusive
// side. The image is read-only, so no cluster is ever freed: its data is
// read under the shared lock without transfer tickets.
class Qcow2Backing final : public Backing {
 public:
  explicit Qcow2Backing(std::unique_ptr<Engine> engine) : engine_(std::move(engine)), size_(engine_->size()) {
    engine_->image_fds(fds_);
  }
  uint64_t size() const override { return size_; }
  void image_fds(std::vector<int>& out) const override { out.insert(out.end(), fds_.begin(), fds_.end()); }

 protected:
  Result<void> read_inside(uint64_t offset, std::span<uint8_t> buf) override {
    iovec v{buf.data(), buf.size()};
    const std::span<const iovec> iov(&v, 1);
    {
      std::shared_lock lock(lock_);
      std::vector<HostExtent> extents;
      auto mapped = engine_->map_shared(false, offset, iov, extents);
      if (!mapped) return std::unexpected(mapped.error());
      if (*mapped) {
        for (const auto& e : extents) {
          // As engine_->read() reports it.
          if (auto r = engine_->file().read_at(e.host_offset, buf.subspan(e.request_offset, e.length)); !r) return r;
        }
        return {};
      }
    }
    std::lock_guard lock(lock_);
    return engine_->read(offset, iov, nullptr);
  }

 private:
  RwLock lock_;
  std::unique_ptr<Engine> engine_;  // guarded by lock_
  uint64_t size_;                   // a read-only image never changes size
  std::vector<int> fds_;            // fixed at open: read without the lock
};

// "top -> middle -> this" for errors.
std::string chain_text(const BackingChain& chain, const std::string& last) {
  std::string text;
  for (const auto& link : chain) text += link.path + " -> ";
  return text + last;
}

// Opens without blocking on a FIFO, then checks what the file is.
Result<std::unique_ptr<FdHostFile>> open_backing_file(const std::string& path, const BackingRules& rules) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return fail(Errc::BackingFailed, errno, chain_text(rules.chain, path));
  UniqueFd owned(fd);
  struct stat st {};
  if (::fstat(fd, &st) != 0) return fail(Errc::BackingFailed, errno, path);
  if (S_ISBLK(st.st_mode)) {
    if (!rules.allow_block_device) return fail(Errc::BackingIsDevice, 0, chain_text(rules.chain, path));
  } else if (!S_ISREG(st.st_mode)) {
    return fail(Errc::NotAFile, 0, chain_text(rules.chain, path));
  }
  for (const auto& above : rules.chain) {
    if (above.known && above.dev == st.st_dev && above.ino == st.st_ino) {
      return fail(Errc::BackingLoop, 0, chain_text(rules.chain, path));
    }
  }
  int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) != 0) return fail(Errc::BackingFailed, errno, path);
  return std::make_unique<FdHostFile>(std::move(owned));
}

}  // namespace

ChainLink chain_link(int fd, const std::string& path) {
  struct stat st {};
  if (fd < 0 || ::fstat(fd, &st) != 0) return ChainLink{0, 0, false, path};
  return ChainLink{st.st_dev, st.st_ino, true, path};
}

Result<void> Backing::read(uint64_t offset, std::span<uint8_t> buf) {
  uint64_t end = size();
  uint64_t inside = offset >= end ? 0 : std::min<uint64_t>(buf.size(), end - offset);
  if (inside > 0) {
    if (auto r = read_inside(offset, buf.first(inside)); !r) return r;
  }
  std::fill(buf.begin() + static_cast<ptrdiff_t>(inside), buf.end(), 0);
  return {};
}

namespace {

// A backing file that met the rules, open, and its format.
struct FoundBacking {
  std::string path;
  std::unique_ptr<FdHostFile> file;
  bool qcow2 = false;
};

// The rules of docs/qcow2.md, "Backing chains", for the file `name` that
// the image at `overlay_path` names: one place for open_backing and
// walk_backing_chain.
Result<FoundBacking> find_backing(const std::string& overlay_path, const std::string& name,
                                  const std::string& format, const BackingRules& rules) {
  std::string path = resolve_backing_name(overlay_path, name);
  // rules.chain holds the overlay and every image above it: a file with
  // that many images above it is backing file number chain.size().
  if (rules.chain.size() > kMaxBackingDepth) {
    return fail(Errc::BackingChainTooDeep, 0, chain_text(rules.chain, path));
  }
  auto file = open_backing_file(path, rules);
  if (!file) return std::unexpected(file.error());
  bool qcow2 = format == "qcow2";
  if (format.empty()) {
    std::array<uint8_t, 4> magic{};
    if (auto r = (*file)->read_at(0, magic); !r) return fail(Errc::BackingFailed, r.error().sys_errno, path);
    qcow2 = load_be<uint32_t>(magic.data()) == kMagic;
  } else if (format != "raw" && format != "qcow2") {
    return fail(Errc::BackingFailed, 0, path + ": unsupported backing format " + format);
  }
  return FoundBacking{std::move(path), std::move(*file), qcow2};
}

}  // namespace

Result<std::unique_ptr<Backing>> open_backing(const std::string& overlay_path, const std::string& name,
                                              const std::string& format, const BackingRules& rules) {
  auto found = find_backing(overlay_path, name, format, rules);
  if (!found) return std::unexpected(found.error());
  const std::string& path = found->path;
  if (found->qcow2) {
    EngineOptions options;
    options.read_only = true;
    options.allow_backing = true;  // the chain was allowed at its top
    options.allow_block_backing = rules.allow_block_device;
    options.chain = rules.chain;
    options.l2_cache_bytes = 4ull << 20;
    options.refcount_cache_bytes = 256ull << 10;
    auto engine = Engine::open(std::move(found->file), path, options);
    if (!engine) return std::unexpected(engine.error());
    return std::make_unique<Qcow2Backing>(std::move(*engine));
  }
  auto size = found->file->size();
  if (!size) return fail(Errc::BackingFailed, size.error().sys_errno, path);
  return std::make_unique<RawBacking>(std::move(found->file), *size);
}

}  // namespace tern::block::qcow2

namespace tern::block {
namespace {

// The header of an image of the chain, read from its open file; errors
// name the file, as read_image_info's do.
Result<qcow2::Header> read_chain_header(qcow2::FdHostFile& file, const std::string& path) {
  auto size = file.size();
  if (!size) return std::unexpected(size.error());
  auto h = qcow2::read_header(file, *size);
  if (!h) {
    Error e = h.error();
    e.detail = path + ": " + e.detail;
    return std::unexpected(e);
  }
  return h;
}

}  // namespace

// The same steps as opening the chain (Engine::open, then open_backing for
// each backing file), reading headers only.
Result<void> walk_backing_chain(const BackingWalk& walk, std::vector<BackingFile>& files) {
  qcow2::BackingRules rules;
  // The top is the caller's to name: a regular file or a block device, but
  // never a FIFO to block on.
  rules.allow_block_device = true;
  auto top = qcow2::open_backing_file(walk.image, rules);
  if (!top) return std::unexpected(top.error());
  auto h = read_chain_header(**top, walk.image);
  if (!h) return std::unexpected(h.error());
  std::string overlay = walk.image;
  std::string name = walk.backing_file.value_or(h->backing_file);
  std::string format = walk.backing_file ? walk.backing_format : h->backing_format;
  rules.allow_block_device = walk.allow_block_device;
  rules.chain.push_back(qcow2::chain_link((*top)->fd(), walk.image));
  while (!name.empty()) {
    auto found = qcow2::find_backing(overlay, name, format, rules);
    if (!found) return std::unexpected(found.error());
    files.push_back(BackingFile{found->path, found->qcow2 ? ImageType::Qcow2 : ImageType::Raw});
    // A raw file's bytes are data (perhaps a guest's), never a header.
    if (!found->qcow2) return {};
    auto below = read_chain_header(*found->file, found->path);
    if (!below) return std::unexpected(below.error());
    rules.chain.push_back(qcow2::chain_link(found->file->fd(), found->path));
    overlay = found->path;
    name = below->backing_file;
    format = below->backing_format;
  }
  return {};
}

}  // namespace tern::block

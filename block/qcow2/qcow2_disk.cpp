#include "block/qcow2/qcow2_disk.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <list>
#include <optional>

#include "base/event_fd.h"
#include "block/qcow2/host_file.h"
#include "block/qcow2/image_lock.h"
#include "block/io/aio.h"
#include "block/io/iov.h"
#include "block/io/transfer.h"

namespace tern::block::qcow2 {
namespace {

constexpr uint64_t kDirectAlign = 512;

// One asynchronous context per queue. submit() maps the request (under the
// disk's lock, the shared side when no metadata changes) and then starts
// the data transfers of already-allocated clusters without the lock;
// drain() reaps them.
class Qcow2IoContext final : public IoContext {
 public:
  Qcow2IoContext(Qcow2Disk& disk, EventFd done, uint32_t depth, io::AioRing ring, uint32_t aio_slots)
      : disk_(disk), done_(std::move(done)), depth_(depth), ring_(std::move(ring)), aio_slots_(aio_slots) {}

  ~Qcow2IoContext() override {
    // Every transfer still queued or in the kernel finishes before its
    // buffers and this context go away.
    std::vector<Completion> ignored_now;
    if (!batch_.empty()) submit_batch(ignored_now);
    while (iocbs_in_flight_ > 0) {
      io_event events[64];
      long n = ring_.wait(events);
      if (n < 0) std::abort();
      std::vector<Completion> ignored;
      for (long i = 0; i < n; ++i) reap(events[i], ignored);
    }
  }

  int completion_fd() const override { return done_.fd(); }
  uint32_t depth() const override { return depth_; }

  Result<void> submit(const Request& req) override {
    if (in_flight_ >= depth_) return fail(Errc::QueueFull);
    ++in_flight_;
    Outcome outcome = run(req);
    if (outcome && !*outcome) {
      *outcome = std::unexpected(req.op == Op::Flush ? placed(outcome->error()) : placed(outcome->error(), req.offset));
    }
    complete_now(req.cookie, std::move(outcome));
    return {};
  }

  void drain(std::vector<Completion>& out) override {
    const size_t before = out.size();
    done_.consume();
    if (!batch_.empty()) submit_batch(ready_);
    for (auto& c : ready_) out.push_back(std::move(c));
    ready_.clear();
    while (iocbs_in_flight_ > 0) {
      io_event events[64];
      size_t n = ring_.reap(events);
      if (n == 0) break;
      for (size_t i = 0; i < n; ++i) reap(events[i], out);
      if (n < 64) break;
    }
    in_flight_ -= static_cast<uint32_t>(out.size() - before);
  }

 private:
  struct Pending;
  struct Piece {
    Pending* owner = nullptr;
    std::vector<iovec> iov;
    uint64_t length = 0;
    iocb cb{};
  };
  struct Pending {
    uint64_t cookie = 0;
    bool is_read = false;
    uint32_t remaining = 0;
    uint64_t offset = 0;  // the request's guest offset, for errors
    TransferTicket ticket = 0;
    Result<void> status;
    std::vector<Piece> pieces;
  };

  // Result of a request that needs no asynchronous transfer, or nullopt
  // when one was started (its completion comes from drain()).
  using Outcome = std::optional<Result<void>>;

  // The image file and the request's guest offset in front of the detail,
  // as raw errors name their file: "PATH: guest offset N: detail".
  Error placed(Error e, std::optional<uint64_t> guest_offset = std::nullopt) const {
    std::string where = disk_.path();
    if (guest_offset) where += ": guest offset " + std::to_string(*guest_offset);
    e.detail = e.detail.empty() ? where : where + ": " + e.detail;
    return e;
  }

  void complete_now(uint64_t cookie, Outcome outcome) {
    if (!outcome) return;
    ready_.push_back(Completion{cookie, std::move(*outcome)});
    done_.signal();
  }

  Outcome run(const Request& req) {
    const uint64_t size = disk_.size();
    uint64_t length = req.length;
    if (req.op == Op::Read || req.op == Op::Write) length = iov_length(req.iov);
    // The engine lock is held while a request is mapped: bounded per request.
    if ((req.op == Op::Read || req.op == Op::Write) && length > kMaxTransferBytes) {
      return fail(Errc::TooLarge, 0, std::to_string(length) + " bytes");
    }
    if (req.op != Op::Flush && (req.offset > size || length > size - req.offset)) {
      return fail(Errc::OutOfRange);
    }
    if (req.op != Op::Read && req.op != Op::Flush && disk_.read_only()) return fail(Errc::ReadOnly);
    switch (req.op) {
      case Op::Flush:
        return disk_.with_engine([](Engine& e) { return e.flush(); });
      case Op::Discard:
        return disk_.with_engine([&](Engine& e) { return e.discard(req.offset, length); });
      case Op::WriteZeroes:
        return disk_.with_engine(
            [&](Engine& e) { return e.write_zeroes(req.offset, length, req.may_unmap); });
      case Op::Read:
      case Op::Write:
        return transfer(req);
    }
    return fail(Errc::InvalidArgument);
  }

  Outcome transfer(const Request& req) {
    const bool is_read = req.op == Op::Read;
    std::vector<HostExtent> extents;
    TransferTicket ticket = 0;
    // First beside the other queues: clusters already allocated need no
    // metadata change. The ticket is taken inside the same lock scope as the
    // mapping; clusters are freed only under the exclusive lock, so a free
    // either came before this mapping (which then did not see the cluster)
    // or comes after the ticket (and waits for it).
    auto shared = disk_.with_engine_shared([&](Engine& e) -> Result<bool> {
      auto r = e.map_shared(!is_read, req.offset, req.iov, extents);
      if (r && *r && !extents.empty()) ticket = e.transfers().begin();
      return r;
    });
    if (!shared) return Result<void>(std::unexpected(shared.error()));
    Result<void> mapped;
    if (!*shared) {
      extents.clear();
      mapped = disk_.with_engine([&](Engine& e) -> Result<void> {
        auto r = is_read ? e.read(req.offset, req.iov, &extents) : e.write(req.offset, req.iov, &extents);
        // Taken under the lock, so a cluster these extents point into that
        // is freed after the lock is dropped stays out of allocation until
        // the ticket is back.
        if (r && !extents.empty()) ticket = e.transfers().begin();
        return r;
      });
    }
    if (!mapped) return mapped;
    if (extents.empty()) return Result<void>{};
    if (!can_go_async(req.iov, extents)) {
      auto r = transfer_sync(is_read, req.iov, extents);
      disk_.transfers().end(ticket);
      return r;
    }
    auto p = std::make_unique<Pending>();
    p->cookie = req.cookie;
    p->is_read = is_read;
    p->ticket = ticket;
    p->offset = req.offset;
    p->pieces.resize(extents.size());
    IovCursor iov(req.iov);  // extents come in request order: one linear walk
    std::vector<iocb*> cbs;
    for (size_t i = 0; i < extents.size(); ++i) {
      Piece& piece = p->pieces[i];
      piece.owner = p.get();
      piece.length = extents[i].length;
      iov_slice(iov, extents[i].request_offset, extents[i].length, piece.iov);
      io::AioRing::prepare_rw(piece.cb, is_read ? io::Direction::Read : io::Direction::Write, disk_.data_fd(),
                              piece.iov, extents[i].host_offset, done_.fd(), reinterpret_cast<uint64_t>(&piece));
      cbs.push_back(&piece.cb);
    }
    // Queued, not yet given to the kernel: submit_batch() hands a whole
    // burst of requests over in one io_submit (one plug, fewer device
    // notifications). The eventfd makes the loop call drain(), which
    // submits, even if nothing completes meanwhile.
    p->remaining = static_cast<uint32_t>(cbs.size());
    iocbs_in_flight_ += static_cast<uint32_t>(cbs.size());
    if (batch_.empty()) done_.signal();
    batch_.insert(batch_.end(), cbs.begin(), cbs.end());
    pending_.push_back(std::move(p));
    if (batch_.size() >= kMaxBatch) submit_batch(ready_);
    return std::nullopt;
  }

  static constexpr size_t kMaxBatch = 64;

  void submit_batch(std::vector<Completion>& out) {
    auto taken = ring_.submit(batch_);
    const size_t submitted = taken ? *taken : 0;
    // Whatever the kernel refused is done synchronously here.
    for (size_t i = submitted; i < batch_.size(); ++i) {
      auto* piece = reinterpret_cast<Piece*>(batch_[i]->aio_data);
      finish_piece(piece, transfer_piece_sync(*piece), out);
    }
    batch_.clear();
    if (!out.empty()) done_.signal();
  }

  // pread/pwrite of one piece on the buffered descriptor; the result as
  // io_event::res would carry it.
  int64_t transfer_piece_sync(const Piece& piece) {
    auto moved = io::transfer_all(disk_.buffered_fd(), piece.owner->is_read ? io::Direction::Read : io::Direction::Write,
                                  piece.iov, static_cast<uint64_t>(piece.cb.aio_offset));
    if (!moved) return moved.error().code == Errc::ShortTransfer ? 0 : -moved.error().sys_errno;
    return static_cast<int64_t>(*moved);
  }

  bool can_go_async(std::span<const iovec> iov, std::span<const HostExtent> extents) const {
    if (disk_.data_fd() < 0) return false;
    if (iocbs_in_flight_ + extents.size() > aio_slots_) return false;
    for (const auto& v : iov) {
      if (reinterpret_cast<uintptr_t>(v.iov_base) % kDirectAlign || v.iov_len % kDirectAlign) return false;
    }
    for (const auto& e : extents) {
      if (e.host_offset % kDirectAlign || e.length % kDirectAlign || e.request_offset % kDirectAlign) {
        return false;
      }
    }
    return true;
  }

  Result<void> transfer_sync(bool is_read, std::span<const iovec> request_iov,
                             std::span<const HostExtent> extents) {
    IovCursor iov(request_iov);  // extents come in request order: one linear walk
    std::vector<iovec> piece;
    for (const auto& e : extents) {
      piece.clear();
      iov_slice(iov, e.request_offset, e.length, piece);
      auto moved = io::transfer_all(disk_.buffered_fd(), is_read ? io::Direction::Read : io::Direction::Write,
                                    piece, e.host_offset);
      if (!moved) {
        moved.error().detail = "host offset " + std::to_string(e.host_offset);
        return std::unexpected(moved.error());
      }
      if (*moved < e.length) iov_zero(piece, *moved, e.length - *moved);  // past the end of the file
    }
    return {};
  }

  void reap(const io_event& ev, std::vector<Completion>& out) {
    finish_piece(reinterpret_cast<Piece*>(ev.data), ev.res, out);
  }

  void finish_piece(Piece* piece, int64_t res, std::vector<Completion>& out) {
    Pending* p = piece->owner;
    --iocbs_in_flight_;
    const std::string host = "host offset " + std::to_string(piece->cb.aio_offset);
    if (res < 0) {
      if (p->status) {
        p->status = std::unexpected(placed(
            Error{p->is_read ? Errc::ReadFailed : Errc::WriteFailed, static_cast<int>(-res), host}, p->offset));
      }
    } else if (static_cast<uint64_t>(res) < piece->length) {
      if (p->is_read) {
        // A cluster allocated past the end of the file reads as zeros.
        iov_zero(piece->iov, static_cast<uint64_t>(res), piece->length - static_cast<uint64_t>(res));
      } else if (p->status) {
        p->status = std::unexpected(placed(Error{Errc::ShortTransfer, 0, host}, p->offset));
      }
    }
    if (--p->remaining > 0) return;
    out.push_back(Completion{p->cookie, std::move(p->status)});
    disk_.transfers().end(p->ticket);
    pending_.remove_if([p](const std::unique_ptr<Pending>& q) { return q.get() == p; });
  }

  Qcow2Disk& disk_;
  EventFd done_;
  uint32_t depth_;
  io::AioRing ring_;  // valid when the disk has an O_DIRECT data descriptor
  uint32_t aio_slots_;
  uint32_t in_flight_ = 0;        // accepted, not yet drained
  uint32_t iocbs_in_flight_ = 0;  // in the kernel
  std::vector<Completion> ready_;
  std::list<std::unique_ptr<Pending>> pending_;
  std::vector<iocb*> batch_;  // queued by submit(), given to the kernel by drain()
};

}  // namespace

Qcow2Disk::Qcow2Disk(std::unique_ptr<Engine> engine, UniqueFd data_fd, bool read_only, std::string path)
    : engine_(std::move(engine)),
      data_fd_(std::move(data_fd)),
      buffered_fd_(engine_->file().fd()),
      read_only_(read_only),
      path_(std::move(path)),
      cluster_size_(static_cast<uint32_t>(engine_->header().cluster_size())),
      size_(engine_->size()) {
  engine_->image_fds(image_fds_);
  if (data_fd_) image_fds_.push_back(data_fd_.get());
}

Qcow2Disk::~Qcow2Disk() {
  // Best effort, as the interface says; close() is where errors are seen.
  (void)close();
}

Result<std::unique_ptr<Qcow2Disk>> Qcow2Disk::open(const OpenOptions& options) {
  auto file = open_host_file(options.path, options.read_only);
  if (!file) return std::unexpected(file.error());
  if (options.lock) {
    if (auto r = lock_image((*file)->fd(), !options.read_only, options.path); !r) {
      return std::unexpected(r.error());
    }
  }
  EngineOptions engine_options;
  engine_options.read_only = options.read_only;
  engine_options.allow_backing = options.allow_backing;
  engine_options.allow_block_backing = options.allow_block_backing;
  auto engine = Engine::open(std::move(*file), options.path, engine_options);
  if (!engine) return std::unexpected(engine.error());
  UniqueFd data_fd;
  // Metadata goes through the page cache. With clusters smaller than a
  // page, a data cluster shares its page with an L2 table or refcount
  // block; an O_DIRECT write then collides with the buffered write-back of
  // that page, and the kernel reports it as EIO on the next fdatasync
  // ("Page cache invalidation failure on direct I/O"). Such images do their
  // data I/O through the page cache too (found by the stress test).
  const bool small_clusters = (*engine)->header().cluster_size() < static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  if (options.direct && !small_clusters) {
    int fd = ::open(options.path.c_str(), (options.read_only ? O_RDONLY : O_RDWR) | O_DIRECT | O_CLOEXEC);
    if (fd < 0) return fail(Errc::OpenFailed, errno, options.path + " (O_DIRECT)");
    data_fd.reset(fd);
  }
  return std::unique_ptr<Qcow2Disk>(new Qcow2Disk(std::move(*engine), std::move(data_fd), options.read_only, options.path));
}

Result<void> Qcow2Disk::resize(uint64_t new_size) {
  return with_engine([&](Engine& e) -> Result<void> {
    if (auto r = e.resize(new_size); !r) return r;
    size_.store(e.size(), std::memory_order_release);
    return {};
  });
}

Topology Qcow2Disk::topology() const {
  Topology t;
  t.logical_block_size = 512;
  t.physical_block_size = 4096;
  t.buffer_alignment = 1;  // unaligned buffers fall back to synchronous I/O
  t.discard_granularity = cluster_size_;
  return t;
}

Capabilities Qcow2Disk::capabilities() const {
  return Capabilities{read_only_, !read_only_, !read_only_};
}

Result<std::unique_ptr<IoContext>> Qcow2Disk::make_io_context(uint32_t depth) {
  if (depth == 0) return fail(Errc::InvalidArgument, 0, "depth 0");
  auto done = EventFd::create();
  if (!done) return fail(Errc::AioSetupFailed, done.error().err, "eventfd");
  io::AioRing ring;
  uint32_t slots = 0;
  if (data_fd_) {
    slots = depth * 4;
    auto created = io::AioRing::create(slots);
    if (!created) return std::unexpected(created.error());
    ring = std::move(*created);
  }
  return std::unique_ptr<IoContext>(new Qcow2IoContext(*this, std::move(*done), depth, std::move(ring), slots));
}

Result<void> Qcow2Disk::close() {
  std::unique_lock lock(lock_);
  if (closed_ || read_only_) return {};
  auto r = engine_->close();
  if (r) closed_ = true;
  return r;
}

void Qcow2Disk::image_fds(std::vector<int>& out) const { out.insert(out.end(), image_fds_.begin(), image_fds_.end()); }

uint64_t Qcow2Disk::allocated_bytes() const {
  struct stat st {};
  if (::fstat(buffered_fd_, &st) != 0) return 0;
  return static_cast<uint64_t>(st.st_blocks) * 512;
}

}  // namespace tern::block::qcow2

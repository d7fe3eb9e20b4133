#include "block/raw/raw_disk.h"

#include <fcntl.h>
#include <linux/aio_abi.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>

#include "base/event_fd.h"
#include "base/thread_sandbox.h"
#include "block/image_lock.h"
#include "block/io/aio.h"
#include "block/io/iov.h"
#include "block/io/transfer.h"

namespace tern::block {
namespace {

// ---- memory helpers ----

struct FreeDeleter {
  void operator()(uint8_t* p) const { std::free(p); }
};
using AlignedBuffer = std::unique_ptr<uint8_t, FreeDeleter>;

AlignedBuffer aligned_buffer(size_t alignment, size_t size) {
  size_t rounded = (size + alignment - 1) / alignment * alignment;
  return AlignedBuffer(static_cast<uint8_t*>(std::aligned_alloc(alignment, std::max(rounded, alignment))));
}

Errc failure_for(Op op) {
  switch (op) {
    case Op::Read: return Errc::ReadFailed;
    case Op::Write: return Errc::WriteFailed;
    case Op::Flush: return Errc::FlushFailed;
    case Op::Discard: return Errc::DiscardFailed;
    case Op::WriteZeroes: return Errc::WriteZeroesFailed;
  }
  return Errc::Internal;
}

// O_DIRECT needs aligned memory; a request whose buffers are not aligned is
// bounced through one aligned buffer of kBounceChunk bytes, a chunk at a
// time, never through a copy of its whole size. Each thread that runs
// requests owns at most one such buffer, so a context's bounce memory is
// bounded by its thread count (docs/virtio.md "Request size").
constexpr size_t kBounceChunk = 1 << 20;

class BounceBuffer {
 public:
  // The buffer, allocated on first use; an error value when memory is short.
  Result<std::span<uint8_t>> get(size_t alignment) {
    if (!buffer_) {
      buffer_ = aligned_buffer(alignment, kBounceChunk);
      if (!buffer_) return fail(Errc::OutOfMemory, ENOMEM, "O_DIRECT bounce buffer");
    }
    return std::span<uint8_t>(buffer_.get(), kBounceChunk);
  }

 private:
  AlignedBuffer buffer_;
};

bool needs_bounce(const Request& r, const RawDisk& disk) {
  if (!disk.direct() || (r.op != Op::Read && r.op != Op::Write)) return false;
  uint32_t align = disk.memory_alignment();
  return !std::all_of(r.iov.begin(), r.iov.end(), [&](const iovec& v) {
    return reinterpret_cast<uintptr_t>(v.iov_base) % align == 0 && v.iov_len % align == 0;
  });
}

Result<void> transfer(int fd, Op op, std::span<const iovec> iov_in, uint64_t offset);

// Runs a validated request, bouncing it chunk by chunk when O_DIRECT needs
// that. A bounced request checks `cancelled` between chunks.
Result<void> run_request(const RawDisk& disk, const Request& r, BounceBuffer& bounce,
                         const std::atomic<bool>* cancelled) {
  if (disk.guards_probe_window(r)) {
    Request tail;
    std::vector<iovec> tail_iov;
    if (auto head = disk.write_probe_window(r, tail, tail_iov); !head || tail.iov.empty()) return head;
    return run_request(disk, tail, bounce, cancelled);  // past the window: not guarded again
  }
  if (!needs_bounce(r, disk)) return disk.execute(r);
  auto chunk = bounce.get(disk.memory_alignment());
  if (!chunk) return std::unexpected(chunk.error());
  const uint64_t total = iov_length(r.iov);
  IovCursor at(r.iov);  // chunks are copied front to back: one linear walk
  for (uint64_t done = 0; done < total;) {
    if (cancelled && cancelled->load(std::memory_order_relaxed)) return fail(Errc::Cancelled, 0, disk.path());
    size_t n = static_cast<size_t>(std::min<uint64_t>(kBounceChunk, total - done));
    std::span<uint8_t> piece(chunk->data(), n);
    if (r.op == Op::Write) iov_copy_to(at, done, piece);
    iovec v{piece.data(), n};
    if (auto t = transfer(disk.fd(), r.op, std::span<const iovec>(&v, 1), r.offset + done); !t) {
      t.error().detail = disk.path();
      return t;
    }
    if (r.op == Op::Read) iov_copy_from(at, done, piece);
    done += n;
  }
  return {};
}

// A request with its own copy of the iovec array: the caller's array lives
// only during submit().
struct OwnedRequest {
  Request request;
  std::vector<iovec> iov;

  static OwnedRequest prepare(const Request& r) {
    OwnedRequest owned;
    owned.request = r;
    owned.iov.assign(r.iov.begin(), r.iov.end());
    owned.request.iov = owned.iov;
    return owned;
  }
};

// Completions produced on other threads, handed to the context's owner in
// drain(). The eventfd is the context's completion_fd().
class CompletionQueue {
 public:
  explicit CompletionQueue(EventFd event) : event_(std::move(event)) {}
  const EventFd& event() const { return event_; }
  void push(Completion c) {
    {
      std::lock_guard lock(mutex_);
      items_.push_back(std::move(c));
    }
    event_.signal();
  }
  size_t take(std::vector<Completion>& out) {
    std::lock_guard lock(mutex_);
    size_t n = items_.size();
    for (Completion& c : items_) out.push_back(std::move(c));
    items_.clear();
    return n;
  }

 private:
  EventFd event_;
  std::mutex mutex_;
  std::vector<Completion> items_;  // guarded by mutex_
};

// Threads that run requests synchronously against the disk and queue their
// completions.
class WorkerPool {
 public:
  WorkerPool(const RawDisk& disk, CompletionQueue& done, unsigned threads) : disk_(disk), done_(done) {
    for (unsigned i = 0; i < threads; ++i) {
      // Worker: takes queued requests, runs them with preadv/pwritev/
      // fallocate/fdatasync, queues the completion; exits on stop.
      threads_.push_back(start_thread(ThreadKind::IoWorker, [this](std::stop_token stop) { run(stop); }));
    }
  }
  ~WorkerPool() {
    for (auto& t : threads_) t.request_stop();
    wake_.notify_all();
    threads_.clear();  // joins
  }
  void post(OwnedRequest job) {
    {
      std::lock_guard lock(mutex_);
      jobs_.push_back(std::move(job));
    }
    wake_.notify_one();
  }

  // IoContext::cancel(): queued jobs complete now as cancelled; bounced
  // ones running stop at their next chunk.
  void cancel() {
    std::deque<OwnedRequest> dropped;
    {
      std::lock_guard lock(mutex_);
      cancelled_.store(true, std::memory_order_relaxed);
      dropped.swap(jobs_);
    }
    for (OwnedRequest& job : dropped) {
      done_.push(Completion{job.request.cookie, fail(Errc::Cancelled, 0, disk_.path())});
    }
  }

 private:
  void run(std::stop_token stop) {
    BounceBuffer bounce;  // this worker's, for O_DIRECT with unaligned memory
    for (;;) {
      OwnedRequest job;
      {
        std::unique_lock lock(mutex_);
        wake_.wait(lock, stop, [&] { return !jobs_.empty(); });
        if (jobs_.empty()) return;  // stopped; anything queued is abandoned with the context
        job = std::move(jobs_.front());
        jobs_.pop_front();
      }
      Result<void> status = run_request(disk_, job.request, bounce, &cancelled_);
      done_.push(Completion{job.request.cookie, std::move(status)});
    }
  }

  const RawDisk& disk_;
  CompletionQueue& done_;
  std::mutex mutex_;
  std::condition_variable_any wake_;
  std::deque<OwnedRequest> jobs_;  // guarded by mutex_
  std::atomic<bool> cancelled_{false};
  std::vector<std::jthread> threads_;
};

// Admission shared by the queued context kinds: a request past the depth is
// refused; one that fails validation is accepted and completes with its
// error. True when the caller goes on to start the request.
Result<bool> admit(const RawDisk& disk, CompletionQueue& done, uint32_t& in_flight, uint32_t depth,
                   const Request& request) {
  if (in_flight >= depth) return fail(Errc::QueueFull);
  ++in_flight;
  if (auto valid = disk.validate(request); !valid) {
    done.push(Completion{request.cookie, std::move(valid)});
    return false;
  }
  return true;
}

// ---- the three context kinds ----

class SyncContext final : public IoContext {
 public:
  SyncContext(const RawDisk& disk, EventFd event, uint32_t depth)
      : disk_(disk), event_(std::move(event)), depth_(depth) {}
  int completion_fd() const override { return event_.fd(); }
  uint32_t depth() const override { return depth_; }
  Result<void> submit(const Request& request) override {
    if (done_.size() >= depth_) return fail(Errc::QueueFull);
    Result<void> status = disk_.validate(request);
    if (status) status = run_request(disk_, request, bounce_, nullptr);
    done_.push_back(Completion{request.cookie, std::move(status)});
    event_.signal();
    return {};
  }
  void drain(std::vector<Completion>& out) override {
    event_.consume();
    for (Completion& c : done_) out.push_back(std::move(c));
    done_.clear();
  }

 private:
  const RawDisk& disk_;
  EventFd event_;
  const uint32_t depth_;
  std::vector<Completion> done_;
  BounceBuffer bounce_;
};

class ThreadContext final : public IoContext {
 public:
  ThreadContext(const RawDisk& disk, EventFd event, uint32_t depth)
      : disk_(disk), done_(std::move(event)), pool_(disk, done_, std::clamp(depth, 1u, 8u)), depth_(depth) {}
  int completion_fd() const override { return done_.event().fd(); }
  uint32_t depth() const override { return depth_; }
  Result<void> submit(const Request& request) override {
    auto admitted = admit(disk_, done_, in_flight_, depth_, request);
    if (!admitted) return std::unexpected(admitted.error());
    if (*admitted) pool_.post(OwnedRequest::prepare(request));
    return {};
  }
  void drain(std::vector<Completion>& out) override {
    done_.event().consume();
    in_flight_ -= static_cast<uint32_t>(done_.take(out));
  }
  void cancel() override { pool_.cancel(); }

 private:
  const RawDisk& disk_;
  CompletionQueue done_;
  WorkerPool pool_;
  const uint32_t depth_;
  uint32_t in_flight_ = 0;  // owner thread only
};

// Linux native AIO (io_setup(2), io_submit(2), io_getevents(2)); completions
// are announced on the context's eventfd through IOCB_FLAG_RESFD.
class AioContext final : public IoContext {
 public:
  static Result<std::unique_ptr<AioContext>> create(const RawDisk& disk, EventFd event, uint32_t depth) {
    auto ring = io::AioRing::create(depth);
    if (!ring) {
      ring.error().detail = disk.path();
      return std::unexpected(ring.error());
    }
    return std::unique_ptr<AioContext>(new AioContext(disk, std::move(event), depth, std::move(*ring)));
  }
  int completion_fd() const override { return done_.event().fd(); }
  uint32_t depth() const override { return depth_; }

  Result<void> submit(const Request& request) override {
    auto admitted = admit(disk_, done_, in_flight_, depth_, request);
    if (!admitted) return std::unexpected(admitted.error());
    if (!*admitted) return {};
    // Bounced requests (O_DIRECT, unaligned memory) go to the worker, which
    // copies them a chunk at a time; so do lists longer than one iocb takes.
    bool rw = request.op == Op::Read || request.op == Op::Write;
    // So do writes into a probed image's probe window, which are checked
    // from a private copy.
    bool via_aio = (rw && !needs_bounce(request, disk_) && !disk_.guards_probe_window(request) &&
                    request.iov.size() <= IOV_MAX) ||
                   (request.op == Op::Flush && aio_fsync_works_);
    if (!via_aio) {
      pool_.post(OwnedRequest::prepare(request));
      return {};
    }
    uint32_t index = free_.back();
    Slot& slot = slots_[index];
    slot.owned = OwnedRequest::prepare(request);
    slot.expected = iov_length(slot.owned.iov);
    if (request.op == Op::Flush) {
      io::AioRing::prepare_fdsync(slot.cb, disk_.fd(), done_.event().fd(), index);
    } else {
      io::AioRing::prepare_rw(slot.cb, request.op == Op::Read ? io::Direction::Read : io::Direction::Write,
                              disk_.fd(), slot.owned.iov, request.offset, done_.event().fd(), index);
    }
    iocb* list[1] = {&slot.cb};
    auto taken = ring_.submit(list);
    if (!taken) {
      int err = taken.error().sys_errno;
      if (request.op == Op::Flush && err == EINVAL) {
        // Filesystems without AIO fsync: flushes go to the worker instead.
        aio_fsync_works_ = false;
        pool_.post(std::move(slot.owned));
        return {};
      }
      --in_flight_;  // not accepted after all
      if (err == EAGAIN) return fail(Errc::QueueFull, err);
      return fail(Errc::SubmitFailed, err, disk_.path());
    }
    free_.pop_back();
    return {};
  }

  void drain(std::vector<Completion>& out) override {
    done_.event().consume();
    io_event events[64];
    for (;;) {
      size_t n = ring_.reap(events);
      if (n == 0) break;
      for (size_t i = 0; i < n; ++i) {
        uint32_t index = static_cast<uint32_t>(events[i].data);
        Slot& slot = slots_[index];
        int64_t res = events[i].res;
        Result<void> status;
        Op op = slot.owned.request.op;
        if (res < 0) {
          status = fail(failure_for(op), static_cast<int>(-res), disk_.path());
        } else if (op == Op::Read && static_cast<uint64_t>(res) < slot.expected) {
          // A short read ends at the end of the file, inside the disk
          // (validate() checked the range): zeros for the rest, as qemu's
          // linux-aio pads it.
          iov_zero(slot.owned.iov, static_cast<uint64_t>(res), slot.expected - static_cast<uint64_t>(res));
        } else if (op != Op::Flush && static_cast<uint64_t>(res) != slot.expected) {
          status = fail(Errc::ShortTransfer, 0, disk_.path());
        }
        out.push_back(Completion{slot.owned.request.cookie, std::move(status)});
        slot.owned = OwnedRequest{};
        free_.push_back(index);
        --in_flight_;
      }
      if (n < 64) break;
    }
    in_flight_ -= static_cast<uint32_t>(done_.take(out));
  }

  // What is already in the kernel finishes (io_cancel does not apply to
  // file I/O); what waits for the worker is dropped.
  void cancel() override { pool_.cancel(); }

 private:
  struct Slot {
    iocb cb{};
    OwnedRequest owned;
    uint64_t expected = 0;
  };

  AioContext(const RawDisk& disk, EventFd event, uint32_t depth, io::AioRing ring)
      : disk_(disk), done_(std::move(event)), pool_(disk, done_, 1), depth_(depth), slots_(depth),
        ring_(std::move(ring)) {
    for (uint32_t i = depth; i > 0; --i) free_.push_back(i - 1);
  }

  const RawDisk& disk_;
  CompletionQueue done_;
  WorkerPool pool_;  // discard, write-zeroes, and flushes AIO cannot do
  const uint32_t depth_;
  // Destroyed before the slots and the worker: io_destroy waits for every
  // request in the kernel, so no completion writes into a slot after it.
  std::vector<Slot> slots_;
  io::AioRing ring_;
  std::vector<uint32_t> free_;
  uint32_t in_flight_ = 0;  // owner thread only
  bool aio_fsync_works_ = true;
};

// The whole iovec list or an error. A read that ends early reached the end
// of the file inside the disk (validate() checked the range): zeros for
// the rest, as qemu's file-posix pads a short read.
Result<void> transfer(int fd, Op op, std::span<const iovec> iov, uint64_t offset) {
  if (op == Op::Read) return io::read_zero_filled(fd, iov, offset);
  auto moved = io::transfer_all(fd, io::Direction::Write, iov, offset);
  if (!moved) return std::unexpected(moved.error());
  return {};
}

}  // namespace

RawDisk::RawDisk(UniqueFd fd, std::string path, bool read_only, bool direct, bool block_device,
                 AioMode aio, uint64_t size, Topology topology, bool probed)
    : fd_(std::move(fd)), path_(std::move(path)), read_only_(read_only), direct_(direct),
      block_device_(block_device), aio_(aio), size_(size), topology_(topology), probed_(probed) {}

RawDisk::~RawDisk() = default;

Result<void> RawDisk::write_probe_window(const Request& r, Request& tail, std::vector<iovec>& tail_iov) const {
  const uint64_t window = probe_window();
  const uint64_t total = iov_length(r.iov);
  const size_t head = static_cast<size_t>(std::min<uint64_t>(window - r.offset, total));
  AlignedBuffer copy = aligned_buffer(std::max<uint32_t>(topology_.buffer_alignment, 512), window);
  if (!copy) return fail(Errc::OutOfMemory, ENOMEM, "probe window buffer");
  std::lock_guard lock(probe_mutex_);
  if (r.offset != 0 || head != window) {
    // Only part of the window is written: what the probe will see next
    // time includes the bytes around it.
    if (auto read = io::read_zero_filled(fd_.get(), std::span<uint8_t>(copy.get(), window), 0); !read) {
      read.error().detail = path_;
      return read;
    }
  }
  // The guest's bytes are copied once; the copy is checked and written.
  iov_copy_to(r.iov, 0, std::span<uint8_t>(copy.get() + r.offset, head));
  if (probe_bytes(std::span<const uint8_t>(copy.get(), kProbeBytes)) != ImageType::Raw) {
    return fail(Errc::ProbeChange, 0, path_ + ": " + std::to_string(head) + " bytes at " + std::to_string(r.offset));
  }
  iovec v{copy.get() + r.offset, head};
  if (head > 0) {
    if (auto t = transfer(fd_.get(), Op::Write, std::span<const iovec>(&v, 1), r.offset); !t) {
      t.error().detail = path_;
      return t;
    }
  }
  tail_iov.clear();
  iov_slice(r.iov, head, total - head, tail_iov);
  tail = r;
  tail.offset = r.offset + head;
  tail.iov = tail_iov;
  return {};
}

Result<std::unique_ptr<RawDisk>> RawDisk::open(const OpenOptions& options, bool probed) {
  // O_NONBLOCK so that a FIFO given as a disk fails the type check below
  // instead of blocking the open; it is cleared once the file is known.
  int flags = O_CLOEXEC | O_NONBLOCK | (options.read_only ? O_RDONLY : O_RDWR) |
              (options.direct ? O_DIRECT : 0);
  int raw_fd;
  do {
    raw_fd = ::open(options.path.c_str(), flags);
  } while (raw_fd < 0 && errno == EINTR);
  if (raw_fd < 0) {
    if (errno == EISDIR) return fail(Errc::NotAFile, 0, options.path);
    return fail(Errc::OpenFailed, errno, options.path);
  }
  UniqueFd fd(raw_fd);
  struct stat st{};
  if (::fstat(fd.get(), &st) != 0) return fail(Errc::OpenFailed, errno, options.path);
  bool block_device = S_ISBLK(st.st_mode);
  if (!S_ISREG(st.st_mode) && !block_device) return fail(Errc::NotAFile, 0, options.path);
  if (::fcntl(fd.get(), F_SETFL, flags & ~(O_NONBLOCK | O_CLOEXEC)) != 0) {
    return fail(Errc::OpenFailed, errno, options.path);
  }
  if (options.lock) {
    if (auto locked = lock_image(fd.get(), !options.read_only, options.path); !locked) {
      return std::unexpected(locked.error());
    }
  }

  uint64_t size = static_cast<uint64_t>(st.st_size);
  Topology topology;
  topology.physical_block_size = 4096;
  if (block_device) {
    if (::ioctl(fd.get(), BLKGETSIZE64, &size) != 0) return fail(Errc::OpenFailed, errno, options.path);
    int logical = 512;
    if (::ioctl(fd.get(), BLKSSZGET, &logical) == 0 && logical >= 512) {
      topology.logical_block_size = static_cast<uint32_t>(logical);
    }
  } else {
    topology.discard_granularity = static_cast<uint32_t>(std::max<blksize_t>(st.st_blksize, 512));
    // A disk is whole sectors: a file whose size is not a multiple of 512
    // is the disk of that size rounded up, its tail past the end of the
    // file reading as zeros (transfer(), AioContext::drain()) and a write
    // there growing the file. qemu's raw format counts the same sectors,
    // so tern-img and qemu-img agree on the virtual size of such a file.
    size = (size + 511) & ~uint64_t{511};
  }
  if (options.direct) {
    uint32_t mem_align = 4096, offset_align = std::max(topology.logical_block_size, 512u);
#ifdef STATX_DIOALIGN
    struct statx stx{};
    if (::statx(fd.get(), "", AT_EMPTY_PATH, STATX_DIOALIGN, &stx) == 0 &&
        (stx.stx_mask & STATX_DIOALIGN) && stx.stx_dio_mem_align != 0) {
      mem_align = stx.stx_dio_mem_align;
      offset_align = std::max(stx.stx_dio_offset_align, 512u);
    }
#endif
    topology.buffer_alignment = std::max<uint32_t>(mem_align, 1);
    topology.logical_block_size = offset_align;
  }
  return std::unique_ptr<RawDisk>(new RawDisk(std::move(fd), options.path, options.read_only,
                                              options.direct, block_device, options.aio, size, topology,
                                              probed));
}

Capabilities RawDisk::capabilities() const {
  // Hole punching and zero-range are fallocate modes of regular files.
  return Capabilities{.read_only = read_only_, .discard = !read_only_ && !block_device_,
                      .write_zeroes = !read_only_};
}

uint64_t RawDisk::allocated_bytes() const {
  struct stat st{};
  if (::fstat(fd_.get(), &st) != 0) return 0;
  return block_device_ ? size() : static_cast<uint64_t>(st.st_blocks) * 512;
}

Result<void> RawDisk::resize(uint64_t new_size) {
  uint64_t current = size();
  if (new_size < current) {
    return fail(Errc::ShrinkRefused, 0,
                path_ + ": " + std::to_string(new_size) + " is smaller than " + std::to_string(current));
  }
  if (read_only_) return fail(Errc::ReadOnly, 0, path_);
  if (block_device_) return fail(Errc::Unsupported, 0, path_ + ": a block device cannot be resized");
  if (new_size == current) return {};
  if (direct_ && new_size % topology_.logical_block_size != 0) {
    return fail(Errc::Unaligned, 0, "size must be a multiple of " + std::to_string(topology_.logical_block_size));
  }
  while (::ftruncate(fd_.get(), static_cast<off_t>(new_size)) != 0) {
    if (errno != EINTR) return fail(Errc::ResizeFailed, errno, path_);
  }
  size_.store(new_size, std::memory_order_release);
  return {};
}

Result<void> RawDisk::close() {
  if (read_only_) return {};
  while (::fdatasync(fd_.get()) != 0) {
    if (errno != EINTR) return fail(Errc::FlushFailed, errno, path_);
  }
  return {};
}

Result<void> RawDisk::validate(const Request& r) const {
  bool write_type = r.op == Op::Write || r.op == Op::Discard || r.op == Op::WriteZeroes;
  if (write_type && read_only_) return fail(Errc::ReadOnly, 0, path_);
  if (r.op == Op::Flush) return {};
  if (r.op == Op::Discard && !capabilities().discard) return fail(Errc::Unsupported, 0, "discard");
  uint64_t length = (r.op == Op::Read || r.op == Op::Write) ? iov_length(r.iov) : r.length;
  if ((r.op == Op::Read || r.op == Op::Write) && r.iov.empty()) return fail(Errc::InvalidArgument);
  if ((r.op == Op::Read || r.op == Op::Write) && length > kMaxTransferBytes) {
    return fail(Errc::TooLarge, 0, std::to_string(length) + " bytes");
  }
  uint64_t disk_size = size();
  if (r.offset > disk_size || length > disk_size - r.offset) {
    return fail(Errc::OutOfRange, 0,
                std::to_string(length) + " bytes at " + std::to_string(r.offset) + " past " +
                    std::to_string(disk_size));
  }
  if (direct_ && (r.offset % topology_.logical_block_size != 0 || length % topology_.logical_block_size != 0)) {
    return fail(Errc::Unaligned, 0,
                "O_DIRECT needs offsets and lengths in multiples of " + std::to_string(topology_.logical_block_size));
  }
  return {};
}

Result<void> RawDisk::execute(const Request& r) const {
  switch (r.op) {
    case Op::Read:
    case Op::Write: {
      auto done = transfer(fd_.get(), r.op, r.iov, r.offset);
      if (!done) done.error().detail = path_;
      return done;
    }
    case Op::Flush:
      while (::fdatasync(fd_.get()) != 0) {
        if (errno != EINTR) return fail(Errc::FlushFailed, errno, path_);
      }
      return {};
    case Op::Discard:
      // A discard is advisory; a hole reads as zeros afterwards.
      if (::fallocate(fd_.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(r.offset),
                      static_cast<off_t>(r.length)) != 0) {
        return fail(Errc::DiscardFailed, errno, path_);
      }
      return {};
    case Op::WriteZeroes:
      return write_zeroes(r.offset, r.length, r.may_unmap);
  }
  return fail(Errc::Unsupported);
}

Result<void> RawDisk::write_zeroes(uint64_t offset, uint64_t length, bool may_unmap) const {
  if (length == 0) return {};
  if (::fallocate(fd_.get(), FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(offset),
                  static_cast<off_t>(length)) == 0) {
    return {};
  }
  if (errno != EOPNOTSUPP && errno != ENOTSUP && errno != EINVAL) {
    return fail(Errc::WriteZeroesFailed, errno, path_);
  }
  if (may_unmap && !block_device_ &&
      ::fallocate(fd_.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(offset),
                  static_cast<off_t>(length)) == 0) {
    return {};
  }
  // Last resort: write zeros, 1 MiB at a time, from an aligned buffer.
  constexpr size_t kChunk = 1 << 20;
  AlignedBuffer zeros = aligned_buffer(std::max<uint32_t>(topology_.buffer_alignment, 4096), kChunk);
  if (!zeros) return fail(Errc::OutOfMemory, ENOMEM, "write-zeroes buffer");
  std::memset(zeros.get(), 0, kChunk);
  while (length > 0) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(length, kChunk));
    iovec v{zeros.get(), n};
    if (auto r = transfer(fd_.get(), Op::Write, std::span<const iovec>(&v, 1), offset); !r) {
      return fail(Errc::WriteZeroesFailed, r.error().sys_errno, path_);
    }
    offset += n;
    length -= n;
  }
  return {};
}

Result<std::unique_ptr<IoContext>> RawDisk::make_io_context(uint32_t depth) {
  if (depth == 0) return fail(Errc::InvalidArgument, 0, "depth 0");
  auto event = EventFd::create();
  if (!event) return fail(Errc::Internal, event.error().err, "eventfd");
  switch (aio_) {
    case AioMode::Sync:
      return std::make_unique<SyncContext>(*this, std::move(*event), depth);
    case AioMode::Native: {
      auto aio = AioContext::create(*this, std::move(*event), depth);
      if (aio) return std::unique_ptr<IoContext>(std::move(*aio));
      static std::once_flag warned;
      std::call_once(warned, [&] {
        std::fprintf(stderr, "tern: Linux AIO unavailable (%s); using a worker pool\n",
                     aio.error().message().c_str());
      });
      auto again = EventFd::create();
      if (!again) return fail(Errc::Internal, again.error().err, "eventfd");
      return std::make_unique<ThreadContext>(*this, std::move(*again), depth);
    }
    case AioMode::Threads:
      return std::make_unique<ThreadContext>(*this, std::move(*event), depth);
  }
  return fail(Errc::Internal);
}

}  // namespace tern::block

// Qcow2Disk: a QCOW2 image behind the disk interface (block/disk.h).
//
// Concurrency (docs/qcow2.md, "Concurrency"): every IoContext (one per
// virtio queue) shares one Engine behind one reader/writer lock, taken only
// in with_engine() (exclusive) and with_engine_shared() (shared): the whole
// lock scope is those two functions. Reads and in-place writes of clusters
// already allocated are mapped under the shared side, side by side across
// queues (Engine::map_shared()); everything that changes metadata
// (allocation, copy-on-write, refcounts, discard, L1 growth, flush, and
// loading an L2 table into the cache) runs under the exclusive side. The
// data of allocated clusters then moves outside the lock, by Linux AIO on
// an O_DIRECT descriptor (direct=on) or by pread/pwrite in submit(). Each
// such transfer holds a ticket (Engine::transfers(), taken inside the
// same lock scope, either side) until it is over; a cluster freed (always
// exclusive) while a ticket older than the free is out is held back from
// allocation until those tickets are back (block/qcow2/transfers.h).
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <shared_mutex>

#include "base/unique_fd.h"
#include "block/disk.h"
#include "block/open.h"
#include "block/qcow2/engine.h"
#include "block/qcow2/rw_lock.h"

namespace tern::block::qcow2 {

class Qcow2Disk final : public DiskFile {
 public:
  [[nodiscard]] static Result<std::unique_ptr<Qcow2Disk>> open(const OpenOptions& options);
  ~Qcow2Disk() override;

  std::string_view format_name() const override { return "qcow2"; }
  uint64_t size() const override { return size_.load(std::memory_order_acquire); }
  Result<void> resize(uint64_t new_size) override;
  Topology topology() const override;
  Capabilities capabilities() const override;
  Result<std::unique_ptr<IoContext>> make_io_context(uint32_t depth) override;
  Result<void> close() override;
  uint64_t allocated_bytes() const override;
  void image_fds(std::vector<int>& out) const override;

  // The exclusive lock scope over the shared engine: any engine call.
  template <class Fn>
  auto with_engine(Fn&& fn) {
    std::unique_lock lock(lock_);
    return fn(*engine_);
  }
  // The shared lock scope: fn may call only Engine::map_shared() and
  // Engine::transfers(), and runs beside other shared scopes.
  template <class Fn>
  auto with_engine_shared(Fn&& fn) {
    std::shared_lock lock(lock_);
    return fn(*engine_);
  }

  // Owned by the engine; begin() under the lock, end() from any thread.
  TransferTracker& transfers() { return engine_->transfers(); }
  int data_fd() const { return data_fd_.get(); }      // O_DIRECT, or -1
  int buffered_fd() const { return buffered_fd_; }    // the engine's file
  bool read_only() const { return read_only_; }
  const std::string& path() const { return path_; }

 private:
  Qcow2Disk(std::unique_ptr<Engine> engine, UniqueFd data_fd, bool read_only, std::string path);

  RwLock lock_;
  std::unique_ptr<Engine> engine_;  // guarded by lock_ (see above)
  UniqueFd data_fd_;
  int buffered_fd_;
  bool read_only_;
  std::string path_;
  bool closed_ = false;  // guarded by lock_, exclusive
  uint32_t cluster_size_;
  std::atomic<uint64_t> size_;
  std::vector<int> image_fds_;  // fixed at open: read without the lock
};

}  // namespace tern::block::qcow2

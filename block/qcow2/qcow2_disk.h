// Qcow2Disk: a QCOW2 image behind the disk interface (block/disk.h).
//
// Concurrency: every IoContext (one per virtio queue) shares one Engine.
// All engine state (caches, refcounts, allocation, header) is serialized
// by mutex_, and the only place that takes it is with_engine(): the whole
// lock scope is that one function. Metadata work and copy-on-write happen
// inside it; the data of clusters that are already allocated is then moved
// outside it, by Linux AIO on an O_DIRECT descriptor (direct=on) or by
// pread/pwrite in submit(). Each such transfer holds a ticket
// (Engine::transfers(), taken under the lock) until it is over; a cluster
// freed while a ticket older than the free is out is held back from
// allocation until those tickets are back (block/qcow2/transfers.h).
#pragma once

#include <atomic>
#include <memory>
#include <mutex>

#include "base/unique_fd.h"
#include "block/disk.h"
#include "block/open.h"
#include "block/qcow2/engine.h"

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

  // The one lock scope over the shared engine.
  template <class Fn>
  auto with_engine(Fn&& fn) {
    std::lock_guard lock(mutex_);
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

  std::mutex mutex_;
  std::unique_ptr<Engine> engine_;  // guarded by mutex_
  UniqueFd data_fd_;
  int buffered_fd_;
  bool read_only_;
  std::string path_;
  bool closed_ = false;  // guarded by mutex_
  uint32_t cluster_size_;
  std::atomic<uint64_t> size_;
};

}  // namespace tern::block::qcow2

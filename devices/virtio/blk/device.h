// VirtioBlk: the virtio-blk device (virtio 1.x section 5.2) over a
// block::DiskFile. It knows requests only: each enabled queue gets a
// QueueRunner (queue_runner.h: the thread, epoll, notifications, EVENT_IDX,
// waiting on reset) with a BlkQueue handler that parses requests straight
// from guest memory, submits them to the queue's IoContext and finishes
// them in whatever order the backend completes them. Transports
// (transport/pci.h, transport/mmio.h) reach it through VirtioCore.
//
// Threads: resize() and counters() from any thread (the API's control
// thread); the VirtioDevice methods as documented in virtio_device.h.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "base/block_counters.h"
#include "block/disk.h"
#include "devices/virtio/blk/errors.h"
#include "devices/virtio/blk/request.h"
#include "devices/virtio/virtio_device.h"

namespace tern::devices {

struct VirtioBlkOptions {
  bool read_only = false;     // readonly=on (also implied by the backend)
  uint16_t num_queues = 1;    // num_queues=N
  uint16_t queue_size = 256;  // queue_size=N (power of two)
  std::string serial;         // serial=STR, GET_ID answers its first 20 bytes
  std::string id;             // id=NAME, for logs
};

// What the disk did, errors by kind: base/block_counters.h.
using BlkCounters = BlockCounters;

class QueueRunner;

class VirtioBlk final : public VirtioDevice {
 public:
  VirtioBlk(std::unique_ptr<block::DiskFile> disk, VirtioBlkOptions options);
  ~VirtioBlk() override;

  uint32_t device_id() const override { return 2; }
  uint64_t device_features() const override { return features_; }
  uint16_t num_queues() const override { return options_.num_queues; }
  uint16_t max_queue_size() const override { return options_.queue_size; }
  uint8_t config_generation() const override;
  void read_config(uint32_t offset, std::span<uint8_t> data) const override;
  void write_config(uint32_t offset, std::span<const uint8_t> data) override;
  void activate(const GuestMemory& memory, uint64_t features, std::vector<ActiveQueue> queues,
                VirtioInterrupt& interrupt) override;
  void reset() override;
  void disable_queue(uint16_t index) override;
  void enable_queue(const GuestMemory& memory, uint64_t features, const ActiveQueue& queue,
                    VirtioInterrupt& interrupt) override;

  // Grows the backend, then capacity in config space, bumps the config
  // generation and raises the configuration-change interrupt. The capacity
  // and the generation change together, under the lock every config and
  // generation read takes, so a driver that reads the generation, the
  // capacity as two halves and the generation again sees either the same
  // generation around one capacity or two generations (virtio 1.x
  // "Device Configuration Space"; 4.1.4.3.1, 4.2.2.2).
  [[nodiscard]] block::Result<void> resize(uint64_t new_size);
  BlkCounters counters() const;
  // Stops the queues and writes back and syncs the backend (qcow2 clears its
  // dirty bit). The VMM calls it on a clean exit; the destructor does the
  // same and logs a failure.
  [[nodiscard]] block::Result<void> close();
  uint64_t capacity_sectors() const { return shared_.capacity.load(std::memory_order_acquire); }
  const std::string& id() const { return options_.id; }
  std::string_view format_name() const { return disk_->format_name(); }
  void image_fds(std::vector<int>& out) const { disk_->image_fds(out); }

  // Shared with the queue workers.
  struct Shared {
    block::DiskFile* disk = nullptr;
    bool read_only = false;
    uint64_t features = 0;  // offered
    std::string serial;
    std::atomic<uint64_t> capacity{0};  // sectors
    AtomicBlockCounters counters;
    std::string log_name;  // "virtio-blk <id>"
    BlkErrorLog error_log;
    uint32_t seg_max = 1;  // data segments per request (5.2.4)
    uint32_t max_discard_sectors = 0;
    uint32_t max_write_zeroes_sectors = 0;
  };

 private:
  // A runner for `queue` (nullptr after interrupt.needs_reset()).
  std::unique_ptr<QueueRunner> start_queue(const GuestMemory& memory, uint64_t features, const ActiveQueue& queue,
                                           VirtioInterrupt& interrupt);

  std::unique_ptr<block::DiskFile> disk_;
  VirtioBlkOptions options_;
  uint64_t features_ = 0;
  Shared shared_;
  // Config space as the driver reads it: capacity and generation move
  // together under it (resize), and every read_config()/config_generation()
  // takes it, so no read falls between the two.
  mutable std::mutex config_mutex_;
  uint8_t generation_ = 0;  // guarded by config_mutex_
  std::mutex mutex_;
  VirtioInterrupt* interrupt_ = nullptr;  // guarded by mutex_; set while active
  std::vector<std::unique_ptr<QueueRunner>> runners_;  // guarded by mutex_
};

}  // namespace tern::devices

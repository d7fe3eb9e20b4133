// Split virtqueue (virtio 1.x section 2.7), device side.
//
// Everything in the rings is guest-controlled. The queue reads each ring
// field once, validates the copy, and turns a descriptor chain into a list of
// host spans that lie wholly inside guest RAM before anyone sees it. A chain
// that breaks a rule is a QueueFault: the device then sets NEEDS_RESET
// (section 2.1.2) and stops serving the queue; nothing aborts and nothing
// outside guest RAM is touched.
//
// Threads: a Virtqueue belongs to one thread at a time (its queue's loop).
// DescriptorChain objects are returned on that same thread.
#pragma once

#include <cstdint>
#include <expected>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "devices/guest_memory.h"

namespace tern::devices {

// Ring layout constants (virtio 1.x 2.7.5, 2.7.6, 2.7.8).
inline constexpr uint16_t kVirtqDescFNext = 1;
inline constexpr uint16_t kVirtqDescFWrite = 2;
inline constexpr uint16_t kVirtqDescFIndirect = 4;
inline constexpr uint16_t kVirtqAvailFNoInterrupt = 1;
inline constexpr uint16_t kMaxQueueSize = 32768;

// Why a queue was declared broken; one value per rule (for tests and logs).
enum class QueueFault {
  BadQueueSize,         // not a power of two, 0, or above the device maximum
  RingOutOfRange,       // descriptor table / avail / used ring outside RAM
  RingMisaligned,       // 2.7: desc 16, avail 2, used 4 byte alignment
  AvailIdxJump,         // avail idx moved ahead by more than the queue size
  HeadOutOfRange,       // avail ring entry >= queue size
  NextOutOfRange,       // descriptor `next` >= table size
  ChainTooLong,         // loop, or more descriptors than the table holds
  BufferOutOfRange,     // descriptor addr/len outside guest RAM
  IndirectNotNegotiated,  // INDIRECT without VIRTIO_F_RING_INDIRECT_DESC
  NestedIndirect,       // 2.7.5.3.1: INDIRECT inside an indirect table
  IndirectWithNext,     // 2.7.5.3.1: INDIRECT and NEXT both set
  BadIndirectLength,    // 0, not a multiple of 16, or more entries than the queue size
  IndirectOutOfRange,   // indirect table outside guest RAM
  ReadableAfterWritable,  // 2.7.4.2: device-readable after device-writable
  HeadInUse,            // avail ring names a head the device still owns
};

const char* queue_fault_name(QueueFault fault);

// What the driver programmed through the transport (common config).
struct QueueConfig {
  uint16_t size = 0;
  uint64_t desc_addr = 0;
  uint64_t avail_addr = 0;
  uint64_t used_addr = 0;
};

struct QueueFeatures {
  bool event_idx = false;  // VIRTIO_F_RING_EVENT_IDX negotiated
  bool indirect = false;   // VIRTIO_F_RING_INDIRECT_DESC negotiated
};

// One validated buffer of a chain: host bytes inside guest RAM.
struct ChainBuffer {
  std::span<uint8_t> bytes;
  bool device_writable = false;
};

class Virtqueue;

// A descriptor chain popped from the avail ring, already validated. Move-only:
// exactly one object owns the head, and destroying that object returns the
// head to the used ring with used_len() bytes written. So a chain is returned
// exactly once, whatever path the request takes.
class DescriptorChain {
 public:
  DescriptorChain() = default;
  DescriptorChain(DescriptorChain&& other) noexcept;
  DescriptorChain& operator=(DescriptorChain&& other) noexcept;
  DescriptorChain(const DescriptorChain&) = delete;
  DescriptorChain& operator=(const DescriptorChain&) = delete;
  ~DescriptorChain();

  uint16_t head() const { return head_; }
  std::span<const ChainBuffer> buffers() const { return buffers_; }
  // Bytes the device wrote into device-writable buffers (reported in the
  // used element, 2.7.8).
  void set_used_len(uint32_t len) { used_len_ = len; }
  uint32_t used_len() const { return used_len_; }
  bool valid() const { return queue_ != nullptr; }

 private:
  friend class Virtqueue;
  DescriptorChain(Virtqueue* queue, uint16_t head, std::vector<ChainBuffer> buffers)
      : queue_(queue), head_(head), buffers_(std::move(buffers)) {}
  void give_back();

  Virtqueue* queue_ = nullptr;
  uint16_t head_ = 0;
  uint32_t used_len_ = 0;
  std::vector<ChainBuffer> buffers_;
};

class Virtqueue {
 public:
  // Validates sizes, alignment and that the three rings lie in guest RAM.
  [[nodiscard]] static std::expected<std::unique_ptr<Virtqueue>, QueueFault> create(
      const GuestMemory& memory, const QueueConfig& config, QueueFeatures features,
      uint16_t max_size);

  Virtqueue(const Virtqueue&) = delete;
  Virtqueue& operator=(const Virtqueue&) = delete;

  // The next available chain, nullopt when the driver has published no more,
  // or a fault (the queue is then broken and pops nothing more).
  [[nodiscard]] std::expected<std::optional<DescriptorChain>, QueueFault> pop();

  // EVENT_IDX (2.7.10): tells the driver to notify when it publishes past
  // what we have consumed. Returns true when more chains arrived meanwhile,
  // so the caller must pop again before sleeping.
  [[nodiscard]] bool arm_notification();

  // Whether the driver wants an interrupt for what was put into the used ring
  // since the last call (2.7.7.2, 2.7.10: vring_need_event). Resets the
  // "since" point.
  [[nodiscard]] bool needs_interrupt();

  // After a device reset or a fault, chains still owned by requests in
  // flight must not touch the rings any more: give_back() becomes a no-op.
  void detach() { detached_ = true; }
  bool broken() const { return broken_.has_value(); }
  std::optional<QueueFault> fault() const { return broken_; }
  uint16_t size() const { return size_; }
  uint32_t in_flight() const { return in_flight_; }

 private:
  friend class DescriptorChain;
  Virtqueue(const GuestMemory& memory, const QueueConfig& config, QueueFeatures features);

  struct Desc {  // 2.7.5 struct virtq_desc, as read from the guest
    uint64_t addr;
    uint32_t len;
    uint16_t flags;
    uint16_t next;
  };
  static_assert(sizeof(Desc) == 16);

  std::unexpected<QueueFault> breaks(QueueFault fault);
  std::expected<std::vector<ChainBuffer>, QueueFault> walk(uint16_t head);
  std::expected<void, QueueFault> add_buffer(const Desc& d, std::vector<ChainBuffer>& out,
                                             bool& seen_writable);
  uint16_t load_avail_idx() const;  // acquire
  void put_used(uint16_t head, uint32_t len);

  GuestMemory memory_;
  QueueFeatures features_;
  uint16_t size_;
  // Host views of the rings, bounds-checked once in create().
  std::span<uint8_t> desc_;   // guest-controlled: size_ * 16 bytes
  std::span<uint8_t> avail_;  // guest-controlled: flags, idx, ring[size_], used_event
  std::span<uint8_t> used_;   // device-written: flags, idx, ring[size_], avail_event
  uint16_t last_avail_ = 0;   // next avail ring slot we consume
  uint16_t used_idx_ = 0;     // next used ring slot we fill
  uint16_t signalled_used_ = 0;  // used_idx_ at the last needs_interrupt()
  uint32_t in_flight_ = 0;
  bool detached_ = false;
  std::optional<QueueFault> broken_;
  std::vector<bool> head_in_use_;  // heads popped and not yet returned
};

}  // namespace tern::devices

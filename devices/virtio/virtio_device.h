// VirtioDevice: a virtio device as the virtio core sees it, and
// VirtioInterrupt: the core (and through it the transport) as the device
// sees it. VirtioCore (virtio_core.h) owns the device, runs the status state
// machine and feature negotiation for whichever transport decodes the
// registers (transport/pci.h, transport/mmio.h), and moves the queue set-up into
// the device on DRIVER_OK:
//
//   construct --(driver: ACK, DRIVER, FEATURES_OK, queue set-up, DRIVER_OK)-->
//   activate(memory, features, queues, interrupt)   device serves its queues
//   reset()                                         threads stopped, back to start
//   activate(...) again after re-initialization, and so on.
//
// Between activate() and reset() a virtio-mmio driver may disable one queue
// (QueueReady 0, 4.2.2) and enable it again: disable_queue(), enable_queue().
//
// Threads: activate()/reset()/enable_queue()/disable_queue() come from a vCPU thread under the transport's
// lock; read_config()/write_config() from vCPU threads; the device calls the
// VirtioInterrupt from its own threads (QueueRunner, queue_runner.h).
#pragma once

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "devices/guest_memory.h"
#include "devices/virtio/virtqueue.h"

namespace tern::devices {

// How a virtio device reaches the guest (transport/pci.h, transport/mmio.h).
enum class VirtioTransport { Pci, Mmio };

// The most queues a device may have on either transport; the most entries a
// queue may have is kMaxQueueSize (virtqueue.h, 2.7).
inline constexpr uint16_t kVirtioMaxQueues = 64;

// Feature bits shared by every device (virtio 1.x section 6).
inline constexpr uint64_t kVirtioFRingIndirectDesc = 1ull << 28;
inline constexpr uint64_t kVirtioFRingEventIdx = 1ull << 29;
inline constexpr uint64_t kVirtioFVersion1 = 1ull << 32;

// Device status bits (2.1).
inline constexpr uint8_t kStatusAcknowledge = 1;
inline constexpr uint8_t kStatusDriver = 2;
inline constexpr uint8_t kStatusDriverOk = 4;
inline constexpr uint8_t kStatusFeaturesOk = 8;
inline constexpr uint8_t kStatusNeedsReset = 0x40;
inline constexpr uint8_t kStatusFailed = 0x80;

class VirtioInterrupt {
 public:
  virtual ~VirtioInterrupt() = default;
  // Used buffers were added to queue `queue` and the driver wants to know.
  virtual void signal_queue(uint16_t queue) = 0;
  // The device configuration changed (resize).
  virtual void signal_config() = 0;
  // The driver broke the protocol (or the device failed): sets
  // DEVICE_NEEDS_RESET and sends a configuration change notification
  // (2.1.2). `reason` is logged, rate-limited.
  virtual void needs_reset(std::string_view reason) = 0;
};

struct ActiveQueue {
  uint16_t index = 0;
  QueueConfig config;
  int notify_fd = -1;  // eventfd the driver's notifications signal (ioeventfd)
};

class VirtioDevice {
 public:
  virtual ~VirtioDevice() = default;
  virtual uint32_t device_id() const = 0;  // 5: "Device Types"
  virtual uint64_t device_features() const = 0;
  virtual uint16_t num_queues() const = 0;
  virtual uint16_t max_queue_size() const = 0;
  virtual uint8_t config_generation() const = 0;
  // Device-specific configuration space; out-of-range bytes read as 0.
  virtual void read_config(uint32_t offset, std::span<uint8_t> data) const = 0;
  virtual void write_config(uint32_t offset, std::span<const uint8_t> data) = 0;
  // Starts serving `queues` (the enabled ones). Failures, guest-made or not,
  // end in interrupt.needs_reset(). `interrupt` outlives the device.
  virtual void activate(const GuestMemory& memory, uint64_t features,
                        std::vector<ActiveQueue> queues, VirtioInterrupt& interrupt) = 0;
  // Stops every queue thread and returns to the state before activate().
  virtual void reset() = 0;
  // While active: stops serving queue `index` as reset() stops them all
  // (nothing reaches its rings afterwards; requests running are waited
  // for); a queue not served is left alone.
  virtual void disable_queue(uint16_t index) = 0;
  // While active: starts serving `queue` (validated as activate() does;
  // failures end in interrupt.needs_reset()).
  virtual void enable_queue(const GuestMemory& memory, uint64_t features, const ActiveQueue& queue,
                            VirtioInterrupt& interrupt) = 0;
};

}  // namespace tern::devices

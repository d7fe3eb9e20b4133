// VirtioCore: the part of a virtio device that no transport owns (virtio 1.x
// sections 2 and 3): the device status state machine, feature negotiation,
// the queue set-up the driver writes, activation and reset, NEEDS_RESET and
// the configuration space with its generation. A transport (transport/pci.h,
// transport/mmio.h) decodes its registers into calls on the core and delivers
// the two kinds of interrupt the core asks for; it never sees the device's
// queues or features beyond the 32-bit windows it shows the driver.
//
//   construct --(driver: ACK, DRIVER, FEATURES_OK, queue set-up, DRIVER_OK)-->
//   device.activate()                        the device serves its queues
//   write_status(0)                          device.reset(), back to start
//
// The core owns the VirtioDevice and one notify eventfd per queue (the
// transport registers them as ioeventfds wherever its notify registers live).
//
// Threads: every method but the VirtioInterrupt side is called with the
// transport's lock held (vCPU threads); the device's queue threads reach the
// transport only through TransportSignals, which must not take that lock (a
// reset joins those threads while holding it).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "base/error.h"
#include "base/event_fd.h"
#include "devices/guest_memory.h"
#include "devices/virtio/rate_limited_log.h"
#include "devices/virtio/virtio_device.h"

namespace tern::devices {

// What the core asks of its transport. Called from the device's threads and
// from vCPU threads.
class TransportSignals {
 public:
  virtual ~TransportSignals() = default;
  virtual void queue_interrupt(uint16_t queue) = 0;
  virtual void config_interrupt() = 0;
};

// One queue as the driver set it up (2.6, 4.1.4.3, 4.2.2).
struct QueueRegs {
  uint16_t size = 0;
  bool ready = false;
  uint64_t desc = 0, driver = 0, device = 0;
};

enum class StatusWrite { Reset, Accepted, Refused };

class VirtioCore final : private VirtioInterrupt {
 public:
  // Creates the notify eventfds; fails for 0 or more than `max_queues` queues.
  [[nodiscard]] static SysResult<std::unique_ptr<VirtioCore>> create(
      std::unique_ptr<VirtioDevice> device, const GuestMemory& memory, std::string name,
      TransportSignals& signals, uint16_t max_queues);
  ~VirtioCore() override;  // stops the device's threads first

  VirtioDevice& device() { return *device_; }
  const VirtioDevice& device() const { return *device_; }
  const std::string& name() const { return name_; }
  uint16_t num_queues() const { return num_queues_; }
  int notify_fd(uint16_t queue) const { return notify_[queue].fd(); }
  // A notification that did not come through an ioeventfd.
  void notify(uint16_t queue) {
    if (queue < num_queues_) notify_[queue].signal();
  }

  // Feature windows: word 0 is bits 0..31, word 1 bits 32..63, others 0.
  uint32_t device_features(uint32_t word) const;
  uint32_t driver_features(uint32_t word) const;
  // Ignored once FEATURES_OK is set (3.1.1).
  void set_driver_features(uint32_t word, uint32_t value);
  uint64_t driver_features() const { return driver_features_; }

  // The device status, with DEVICE_NEEDS_RESET when the device set it.
  uint8_t status() const;
  // The driver writes the device status: 0 resets the device (the transport
  // then resets its own registers); a write that clears a bit the driver set
  // (the status never moves backwards, 2.1.1) is refused; FEATURES_OK sticks
  // only for a subset of the offered features that includes VERSION_1;
  // DRIVER_OK after FEATURES_OK activates the device.
  StatusWrite write_status(uint8_t value);

  // The queue's registers, or nullptr when it does not exist.
  const QueueRegs* queue(uint16_t index) const;
  // The same for a write: nullptr also while the queue is ready (the
  // device's view of an enabled queue never changes under its thread).
  // virtio-pci also freezes them at DRIVER_OK (4.1.4.3.2), in the transport.
  QueueRegs* queue_for_setup(uint16_t index);
  // virtio-mmio QueueReady (4.2.2), which reads back the last value
  // written: 1 enables the queue, 0 disables it (its registers take
  // writes again). Once the device is active the device starts or stops
  // serving that queue too. Linux writes 0 when a queue's set-up fails
  // and in vm_del_vq, and refuses to set up a queue that still reads 1.
  void set_queue_ready(uint16_t index, bool ready);

  uint8_t config_generation() const { return device_->config_generation(); }
  void read_config(uint32_t offset, std::span<uint8_t> data) const { device_->read_config(offset, data); }
  void write_config(uint32_t offset, std::span<const uint8_t> data) { device_->write_config(offset, data); }

  bool needs_reset() const { return needs_reset_.load(); }
  // The transport found the driver breaking the protocol.
  void fail(std::string_view reason) { needs_reset(reason); }

 private:
  VirtioCore(std::unique_ptr<VirtioDevice> device, const GuestMemory& memory, std::string name,
             TransportSignals& signals);
  void activate();
  void reset();
  ActiveQueue active_queue(uint16_t index) const;

  // VirtioInterrupt, for the device (its threads, vCPU threads, the API).
  void signal_queue(uint16_t queue) override { signals_.queue_interrupt(queue); }
  void signal_config() override { signals_.config_interrupt(); }
  void needs_reset(std::string_view reason) override;

  const std::unique_ptr<VirtioDevice> device_;
  const GuestMemory memory_;
  const std::string name_;
  TransportSignals& signals_;
  const uint16_t num_queues_;
  std::vector<EventFd> notify_;  // one per queue; fds fixed for the device's life
  RateLimitedLog log_;

  uint8_t status_ = 0;  // the driver's bits
  bool active_ = false;  // device activated, not reset since
  uint64_t driver_features_ = 0;
  std::vector<QueueRegs> queues_;
  std::atomic<bool> needs_reset_{false};  // set by device threads too
};

}  // namespace tern::devices

#include "devices/virtio/virtio_core.h"

#include <cerrno>
#include <string>

namespace tern::devices {

SysResult<std::unique_ptr<VirtioCore>> VirtioCore::create(std::unique_ptr<VirtioDevice> device,
                                                          const GuestMemory& memory, std::string name,
                                                          TransportSignals& signals, uint16_t max_queues) {
  if (device->num_queues() == 0 || device->num_queues() > max_queues) {
    return std::unexpected(SysError{"virtio queue count", EINVAL});
  }
  auto core = std::unique_ptr<VirtioCore>(new VirtioCore(std::move(device), memory, std::move(name), signals));
  for (uint16_t q = 0; q < core->num_queues_; ++q) {
    auto fd = EventFd::create();
    if (!fd) return std::unexpected(fd.error());
    core->notify_.push_back(std::move(*fd));
  }
  return core;
}

VirtioCore::VirtioCore(std::unique_ptr<VirtioDevice> device, const GuestMemory& memory, std::string name,
                       TransportSignals& signals)
    : device_(std::move(device)),
      memory_(memory),
      name_(std::move(name)),
      signals_(signals),
      num_queues_(device_->num_queues()),
      queues_(num_queues_, QueueRegs{.size = device_->max_queue_size()}) {}

VirtioCore::~VirtioCore() { device_->reset(); }

uint32_t VirtioCore::device_features(uint32_t word) const {
  uint64_t f = device_->device_features();
  return word == 0 ? static_cast<uint32_t>(f) : word == 1 ? static_cast<uint32_t>(f >> 32) : 0u;
}

uint32_t VirtioCore::driver_features(uint32_t word) const {
  return word == 0 ? static_cast<uint32_t>(driver_features_)
         : word == 1 ? static_cast<uint32_t>(driver_features_ >> 32)
                     : 0u;
}

void VirtioCore::set_driver_features(uint32_t word, uint32_t value) {
  if (status_ & kStatusFeaturesOk) return;
  if (word == 0) {
    driver_features_ = (driver_features_ & ~0xffffffffull) | value;
  } else if (word == 1) {
    driver_features_ = (driver_features_ & 0xffffffffull) | (uint64_t{value} << 32);
  }
}

uint8_t VirtioCore::status() const {
  return static_cast<uint8_t>(status_ | (needs_reset_.load() ? kStatusNeedsReset : 0));
}

StatusWrite VirtioCore::write_status(uint8_t value) {
  if (value == 0) {
    reset();
    return StatusWrite::Reset;
  }
  uint8_t old = status_;
  value = static_cast<uint8_t>(value & ~kStatusNeedsReset);  // the device's bit
  if ((value & old) != old) {
    log_.log(name_, "driver cleared a device status bit without a reset; ignored");
    return StatusWrite::Refused;
  }
  if ((value & kStatusFeaturesOk) && !(old & kStatusFeaturesOk)) {
    // 3.1.1 steps 5-6: a subset of what we offer, and VERSION_1 (no legacy
    // interface on either transport).
    uint64_t offered = device_->device_features();
    if ((driver_features_ & ~offered) != 0 || !(driver_features_ & kVirtioFVersion1)) {
      value = static_cast<uint8_t>(value & ~kStatusFeaturesOk);
    }
  }
  status_ = value;
  if ((value & kStatusDriverOk) && !(old & kStatusDriverOk) && (value & kStatusFeaturesOk) &&
      !needs_reset_.load()) {
    activate();
  }
  return StatusWrite::Accepted;
}

const QueueRegs* VirtioCore::queue(uint16_t index) const {
  return index < num_queues_ ? &queues_[index] : nullptr;
}

QueueRegs* VirtioCore::queue_for_setup(uint16_t index) {
  if (index >= num_queues_ || queues_[index].ready) return nullptr;
  return &queues_[index];
}

void VirtioCore::set_queue_ready(uint16_t index, bool ready) {
  if (index >= num_queues_ || queues_[index].ready == ready) return;
  queues_[index].ready = ready;
  if (!active_) return;  // DRIVER_OK will start what is ready then
  if (!ready) {
    device_->disable_queue(index);  // joins the queue's thread, as reset() does
  } else if (!needs_reset_.load()) {
    device_->enable_queue(memory_, driver_features_, active_queue(index), *this);
  }
}

ActiveQueue VirtioCore::active_queue(uint16_t index) const {
  const QueueRegs& q = queues_[index];
  return ActiveQueue{
      .index = index,
      .config = QueueConfig{.size = q.size, .desc_addr = q.desc, .avail_addr = q.driver, .used_addr = q.device},
      .notify_fd = notify_[index].fd()};
}

void VirtioCore::activate() {
  std::vector<ActiveQueue> active;
  for (uint16_t i = 0; i < num_queues_; ++i) {
    if (queues_[i].ready) active.push_back(active_queue(i));
  }
  active_ = true;
  device_->activate(memory_, driver_features_, std::move(active), *this);
}

void VirtioCore::reset() {
  device_->reset();  // joins the queue threads; they never take the transport's lock
  active_ = false;
  status_ = 0;
  driver_features_ = 0;
  for (uint16_t i = 0; i < num_queues_; ++i) {
    queues_[i] = QueueRegs{.size = device_->max_queue_size()};
    notify_[i].consume();  // stale notifications belong to the old rings
  }
  needs_reset_.store(false);
}

void VirtioCore::needs_reset(std::string_view reason) {
  log_.log(name_, std::string("device needs reset: ") + std::string(reason));
  needs_reset_.store(true);
  // 2.1.2: with DEVICE_NEEDS_RESET set, send a configuration change
  // notification.
  signals_.config_interrupt();
}

}  // namespace tern::devices

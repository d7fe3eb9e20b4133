#include "devices/virtio/transport/mmio.h"

#include <algorithm>
#include <cstring>

namespace tern::devices {

namespace r = mmio_reg;

SysResult<std::unique_ptr<VirtioMmioDevice>> VirtioMmioDevice::create(std::unique_ptr<VirtioDevice> device,
                                                                      VmServices& vm, const GuestMemory& memory,
                                                                      std::string name, uint64_t base,
                                                                      uint32_t gsi) {
  auto d = std::unique_ptr<VirtioMmioDevice>(new VirtioMmioDevice(vm, name, base, gsi));
  auto irq = vm.create_irq_line(gsi);
  if (!irq) return std::unexpected(irq.error());
  d->irq_ = std::move(*irq);
  auto core = VirtioCore::create(std::move(device), memory, std::move(name), *d, kVirtioMmioMaxQueues);
  if (!core) return std::unexpected(core.error());
  d->core_ = std::move(*core);
  // Linux writes the queue index as 32 bits (vm_notify: writel); other
  // widths reach write() and are signalled from there.
  for (uint16_t q = 0; q < d->core_->num_queues(); ++q) {
    if (auto added = vm.add_ioeventfd(AddressSpace::Mmio, base + r::kQueueNotify, 4, d->core_->notify_fd(q), q);
        !added) {
      for (uint16_t undo = 0; undo < q; ++undo) {
        (void)vm.remove_ioeventfd(AddressSpace::Mmio, base + r::kQueueNotify, 4, d->core_->notify_fd(undo), undo);
      }
      return std::unexpected(added.error());
    }
  }
  d->ioeventfds_registered_ = true;
  return d;
}

VirtioMmioDevice::VirtioMmioDevice(VmServices& vm, std::string name, uint64_t base, uint32_t gsi)
    : vm_(vm), name_(std::move(name)), base_(base), gsi_(gsi) {}

VirtioMmioDevice::~VirtioMmioDevice() {
  std::lock_guard lock(mutex_);
  if (ioeventfds_registered_) {
    for (uint16_t q = 0; q < core_->num_queues(); ++q) {
      (void)vm_.remove_ioeventfd(AddressSpace::Mmio, base_ + r::kQueueNotify, 4, core_->notify_fd(q), q);
    }
  }
  core_.reset();  // stops the queue threads before the interrupt line goes away
}

uint8_t VirtioMmioDevice::device_status() const {
  std::lock_guard lock(mutex_);
  return core_->status();
}

void VirtioMmioDevice::read(uint64_t offset, std::span<uint8_t> data) {
  std::fill(data.begin(), data.end(), 0);
  if (offset >= kVirtioMmioSize || data.size() > kVirtioMmioSize - offset) return;
  std::lock_guard lock(mutex_);
  if (offset >= r::kConfig) {
    core_->read_config(static_cast<uint32_t>(offset - r::kConfig), data);
    return;
  }
  if (data.size() != 4 || offset % 4 != 0) {
    log_.log(name_, "register read not 32 bits wide and aligned; reads 0");
    return;
  }
  uint32_t v = read_register(offset);
  std::memcpy(data.data(), &v, 4);
}

void VirtioMmioDevice::write(uint64_t offset, std::span<const uint8_t> data) {
  if (offset >= kVirtioMmioSize || data.size() > kVirtioMmioSize - offset) return;
  std::lock_guard lock(mutex_);
  if (offset >= r::kConfig) {
    core_->write_config(static_cast<uint32_t>(offset - r::kConfig), data);
    return;
  }
  if (data.size() != 4 || offset % 4 != 0) {
    log_.log(name_, "register write not 32 bits wide and aligned; ignored");
    return;
  }
  uint32_t v;
  std::memcpy(&v, data.data(), 4);
  write_register(offset, v);
}

uint32_t VirtioMmioDevice::read_register(uint64_t offset) const {
  const QueueRegs* q = queue_sel_ <= 0xffff ? core_->queue(static_cast<uint16_t>(queue_sel_)) : nullptr;
  switch (offset) {
    case r::kMagic: return kVirtioMmioMagic;
    case r::kVersion: return kVirtioMmioVersion;
    case r::kDeviceId: return core_->device().device_id();
    case r::kVendorId: return kVirtioMmioVendor;
    case r::kDeviceFeatures: return core_->device_features(device_features_sel_);
    // 4.2.2.1: 0 for a queue that is not available.
    case r::kQueueNumMax: return q ? core_->device().max_queue_size() : 0;
    case r::kQueueNum: return q ? q->size : 0;
    case r::kQueueReady: return q && q->ready ? 1 : 0;
    case r::kInterruptStatus: return interrupt_status_.load();
    case r::kStatus: return core_->status();
    case r::kQueueDescLow: return q ? static_cast<uint32_t>(q->desc) : 0;
    case r::kQueueDescHigh: return q ? static_cast<uint32_t>(q->desc >> 32) : 0;
    case r::kQueueDriverLow: return q ? static_cast<uint32_t>(q->driver) : 0;
    case r::kQueueDriverHigh: return q ? static_cast<uint32_t>(q->driver >> 32) : 0;
    case r::kQueueDeviceLow: return q ? static_cast<uint32_t>(q->device) : 0;
    case r::kQueueDeviceHigh: return q ? static_cast<uint32_t>(q->device >> 32) : 0;
    case r::kConfigGeneration: return core_->config_generation();
    default:
      // 4.2.2.1: a shared memory region that does not exist has length and
      // base all ones.
      if (offset >= r::kShmLenLow && offset <= r::kShmBaseHigh) return 0xffffffffu;
      return 0;  // write-only and reserved registers
  }
}

void VirtioMmioDevice::write_register(uint64_t offset, uint32_t value) {
  QueueRegs* q = queue_sel_ <= 0xffff ? core_->queue_for_setup(static_cast<uint16_t>(queue_sel_)) : nullptr;
  auto set_low = [](uint64_t& field, uint32_t v) { field = (field & ~0xffffffffull) | v; };
  auto set_high = [](uint64_t& field, uint32_t v) { field = (field & 0xffffffffull) | (uint64_t{v} << 32); };
  switch (offset) {
    case r::kDeviceFeaturesSel: device_features_sel_ = value; break;
    case r::kDriverFeatures: core_->set_driver_features(driver_features_sel_, value); break;
    case r::kDriverFeaturesSel: driver_features_sel_ = value; break;
    case r::kQueueSel: queue_sel_ = value; break;
    case r::kQueueNum:
      if (q) q->size = static_cast<uint16_t>(std::min<uint32_t>(value, 0xffff));
      break;
    case r::kQueueReady:
      // 4.2.2: reads back the last value written; 0 disables the queue.
      if (queue_sel_ <= 0xffff && value <= 1) core_->set_queue_ready(static_cast<uint16_t>(queue_sel_), value == 1);
      break;
    case r::kQueueNotify:
      // Reached only when the ioeventfd did not match (another width, or
      // a value that names no queue); the core ignores unknown queues.
      if (value <= 0xffff) core_->notify(static_cast<uint16_t>(value));
      break;
    case r::kInterruptAck: interrupt_status_.fetch_and(~value); break;
    case r::kStatus:
      if (value > 0xff) break;
      if (core_->write_status(static_cast<uint8_t>(value)) == StatusWrite::Reset) reset_transport();
      break;
    case r::kQueueDescLow: if (q) set_low(q->desc, value); break;
    case r::kQueueDescHigh: if (q) set_high(q->desc, value); break;
    case r::kQueueDriverLow: if (q) set_low(q->driver, value); break;
    case r::kQueueDriverHigh: if (q) set_high(q->driver, value); break;
    case r::kQueueDeviceLow: if (q) set_low(q->device, value); break;
    case r::kQueueDeviceHigh: if (q) set_high(q->device, value); break;
    default: break;  // read-only and reserved registers
  }
}

void VirtioMmioDevice::reset_transport() {
  device_features_sel_ = 0;
  driver_features_sel_ = 0;
  queue_sel_ = 0;
  interrupt_status_.store(0);
}

void VirtioMmioDevice::queue_interrupt(uint16_t) {
  interrupt_status_.fetch_or(kMmioIntUsedBuffer);
  irq_->trigger();
}

void VirtioMmioDevice::config_interrupt() {
  interrupt_status_.fetch_or(kMmioIntConfig);
  irq_->trigger();
}

}  // namespace tern::devices

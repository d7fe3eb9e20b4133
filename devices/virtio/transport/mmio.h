// VirtioMmioDevice: the virtio-mmio transport (virtio 1.x section 4.2,
// version 2 registers, no legacy interface) over a VirtioCore. One device is
// one 4 KiB region on the MMIO bus at a fixed address:
//
//   0x000 MagicValue "virt"   0x004 Version 2      0x008 DeviceID  0x00c VendorID
//   0x010 DeviceFeatures      0x014 DeviceFeaturesSel
//   0x020 DriverFeatures      0x024 DriverFeaturesSel
//   0x030 QueueSel  0x034 QueueNumMax  0x038 QueueNum  0x044 QueueReady
//   0x050 QueueNotify (an ioeventfd per queue, matched on the queue index)
//   0x060 InterruptStatus     0x064 InterruptACK   0x070 Status
//   0x080/0x084 QueueDesc     0x090/0x094 QueueDriver  0x0a0/0x0a4 QueueDevice
//   0x0ac SHMSel, 0x0b0.. SHM length/base (no regions: all ones)
//   0x0fc ConfigGeneration    0x100.. device configuration space
//
// Interrupts: one line per device, an irqfd on an IOAPIC input (edge);
// InterruptStatus says why (bit 0 used buffers, bit 1 configuration
// change) until the driver acknowledges.
//
// Hostile accesses are answered, never trusted: a register access that is
// not 32 bits wide and aligned reads 0 and writes nothing (4.2.2.2); queue
// registers of a queue that does not exist, is ready, or after DRIVER_OK are
// ignored; a status that clears bits is refused (the core); a queue with
// bad addresses ends in NEEDS_RESET when the device activates.
//
// Threads: register accesses from vCPU threads (mutex_, which also guards
// the core); interrupts from the device's queue threads (atomics and the
// irqfd only, so a reset that joins them while holding mutex_ cannot
// deadlock).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>

#include "base/error.h"
#include "devices/guest_memory.h"
#include "devices/io_handler.h"
#include "devices/virtio/rate_limited_log.h"
#include "devices/virtio/virtio_core.h"
#include "devices/vm_services.h"

namespace tern::devices {

inline constexpr uint64_t kVirtioMmioSize = 0x1000;
inline constexpr uint32_t kVirtioMmioMagic = 0x74726976;  // "virt"
inline constexpr uint32_t kVirtioMmioVersion = 2;
inline constexpr uint32_t kVirtioMmioVendor = 0x1af4;
inline constexpr uint16_t kVirtioMmioMaxQueues = kVirtioMaxQueues;

// Register offsets (4.2.2).
namespace mmio_reg {
inline constexpr uint64_t kMagic = 0x000, kVersion = 0x004, kDeviceId = 0x008, kVendorId = 0x00c;
inline constexpr uint64_t kDeviceFeatures = 0x010, kDeviceFeaturesSel = 0x014;
inline constexpr uint64_t kDriverFeatures = 0x020, kDriverFeaturesSel = 0x024;
inline constexpr uint64_t kQueueSel = 0x030, kQueueNumMax = 0x034, kQueueNum = 0x038, kQueueReady = 0x044;
inline constexpr uint64_t kQueueNotify = 0x050, kInterruptStatus = 0x060, kInterruptAck = 0x064;
inline constexpr uint64_t kStatus = 0x070;
inline constexpr uint64_t kQueueDescLow = 0x080, kQueueDescHigh = 0x084;
inline constexpr uint64_t kQueueDriverLow = 0x090, kQueueDriverHigh = 0x094;
inline constexpr uint64_t kQueueDeviceLow = 0x0a0, kQueueDeviceHigh = 0x0a4;
inline constexpr uint64_t kShmSel = 0x0ac, kShmLenLow = 0x0b0, kShmBaseHigh = 0x0bc;
inline constexpr uint64_t kConfigGeneration = 0x0fc, kConfig = 0x100;
}  // namespace mmio_reg

inline constexpr uint32_t kMmioIntUsedBuffer = 1;
inline constexpr uint32_t kMmioIntConfig = 2;

class VirtioMmioDevice final : public IoHandler, private TransportSignals {
 public:
  // The device at [base, base + kVirtioMmioSize) with its interrupt on IOAPIC
  // input `gsi`; registers the QueueNotify ioeventfds there.
  [[nodiscard]] static SysResult<std::unique_ptr<VirtioMmioDevice>> create(
      std::unique_ptr<VirtioDevice> device, VmServices& vm, const GuestMemory& memory, std::string name,
      uint64_t base, uint32_t gsi);
  ~VirtioMmioDevice() override;

  std::string_view name() const override { return name_; }
  void read(uint64_t offset, std::span<uint8_t> data) override;
  void write(uint64_t offset, std::span<const uint8_t> data) override;

  VirtioDevice& device() { return core_->device(); }
  uint64_t base() const { return base_; }
  uint32_t gsi() const { return gsi_; }
  uint8_t device_status() const;

 private:
  VirtioMmioDevice(VmServices& vm, std::string name, uint64_t base, uint32_t gsi);
  uint32_t read_register(uint64_t offset) const;  // mutex_ held
  void write_register(uint64_t offset, uint32_t value);  // mutex_ held
  void reset_transport();  // mutex_ held, after the core reset

  // TransportSignals (queue threads, vCPU threads).
  void queue_interrupt(uint16_t queue) override;
  void config_interrupt() override;

  VmServices& vm_;
  const std::string name_;
  const uint64_t base_;
  const uint32_t gsi_;
  RateLimitedLog log_;
  std::unique_ptr<IrqLine> irq_;
  bool ioeventfds_registered_ = false;

  mutable std::mutex mutex_;
  std::unique_ptr<VirtioCore> core_;    // its state guarded by mutex_
  uint32_t device_features_sel_ = 0;    // guarded by mutex_
  uint32_t driver_features_sel_ = 0;    // guarded by mutex_
  uint32_t queue_sel_ = 0;              // guarded by mutex_
  std::atomic<uint32_t> interrupt_status_{0};
};

}  // namespace tern::devices

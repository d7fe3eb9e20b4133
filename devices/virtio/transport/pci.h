// VirtioPciDevice: the modern virtio-pci transport (virtio 1.x section 4.1)
// as one PCI function, over a VirtioCore (virtio_core.h), which owns the
// device and runs the status machine, feature negotiation and queue set-up.
// This class only decodes PCI: configuration space with the virtio
// capabilities (class code from the device type), the common configuration
// registers, ISR status, the notify area and MSI-X (devices/pci/msix.h).
//
// BAR 0 (64-bit MMIO, 32 KiB):
//   0x0000 common configuration   0x1000 ISR status    0x2000 device config
//   0x3000 notify (4 bytes/queue)  0x4000 MSI-X table   0x5000 MSI-X PBA
// Queue notifications are ioeventfds at the notify addresses (registered in
// bar_placed()); interrupts are MSI-X vectors backed by irqfds.
//
// Threads: config/BAR accesses from vCPU threads (mutex_, which also guards
// the core); interrupts from the device's queue threads (the MsixTable's own
// lock and atomics only, so a reset that joins those threads while holding
// mutex_ cannot deadlock). Lock order: mutex_, then the MsixTable's.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "base/error.h"
#include "base/event_fd.h"
#include "devices/guest_memory.h"
#include "devices/pci/msix.h"
#include "devices/pci/pci_device.h"
#include "devices/virtio/rate_limited_log.h"
#include "devices/virtio/virtio_core.h"
#include "devices/vm_services.h"

namespace tern::devices {

inline constexpr uint16_t kVirtioNoVector = 0xffff;  // VIRTIO_MSI_NO_VECTOR

// BAR 0 layout.
inline constexpr uint64_t kVirtioBarSize = 0x8000;
inline constexpr uint64_t kCommonCfgOffset = 0x0000;
inline constexpr uint64_t kCommonCfgSize = 0x40;
inline constexpr uint64_t kIsrOffset = 0x1000;
inline constexpr uint64_t kDeviceCfgOffset = 0x2000;
inline constexpr uint64_t kDeviceCfgSize = 0x1000;
inline constexpr uint64_t kNotifyOffset = 0x3000;
inline constexpr uint32_t kNotifyOffMultiplier = 4;
inline constexpr uint64_t kMsixTableOffset = 0x4000;
inline constexpr uint64_t kMsixPbaOffset = 0x5000;
inline constexpr uint16_t kVirtioPciMaxQueues = kVirtioMaxQueues;

// PCI class code (class << 8 | subclass) for a virtio device type (5).
uint16_t virtio_pci_class(uint32_t device_id);

class VirtioPciDevice final : public PciDevice, private TransportSignals {
 public:
  // Creates the notify eventfds and one MSI irq per vector (queues + config).
  [[nodiscard]] static SysResult<std::unique_ptr<VirtioPciDevice>> create(
      std::unique_ptr<VirtioDevice> device, VmServices& vm, const GuestMemory& memory,
      std::string name);
  ~VirtioPciDevice() override;

  std::string_view name() const override { return name_; }
  std::vector<PciBarInfo> bars() const override;
  void config_read(uint32_t offset, std::span<uint8_t> data) override;
  void config_write(uint32_t offset, std::span<const uint8_t> data) override;
  void bar_read(uint8_t bar, uint64_t offset, std::span<uint8_t> data) override;
  void bar_write(uint8_t bar, uint64_t offset, std::span<const uint8_t> data) override;
  void bar_placed(uint8_t bar, uint64_t gpa) override;

  VirtioDevice& device() { return core_->device(); }
  uint8_t device_status() const;

 private:
  VirtioPciDevice(VmServices& vm, std::string name, uint16_t num_queues);
  void build_config_space();

  // TransportSignals (queue threads, vCPU threads).
  void queue_interrupt(uint16_t queue) override;
  void config_interrupt() override;

  void common_read(uint64_t offset, std::span<uint8_t> data);
  void common_write(uint64_t offset, std::span<const uint8_t> data);
  void snapshot_common(std::array<uint8_t, kCommonCfgSize>& out) const;
  void reset_transport();  // mutex_ held, after the core reset
  void register_ioeventfds(uint64_t bar_gpa);
  void unregister_ioeventfds();
  bool pci_cfg_window(uint32_t offset, size_t len, uint8_t& bar, uint32_t& bar_offset,
                      uint32_t& length) const;

  VmServices& vm_;
  const std::string name_;
  const uint16_t num_queues_;
  const uint16_t num_vectors_;
  uint8_t msix_cap_ = 0;     // config-space offset of the MSI-X capability
  uint8_t pci_cfg_cap_ = 0;  // config-space offset of VIRTIO_PCI_CAP_PCI_CFG
  RateLimitedLog log_;
  std::unique_ptr<MsixTable> msix_;  // made in create(), before the core

  mutable std::mutex mutex_;
  std::unique_ptr<VirtioCore> core_;    // its state guarded by mutex_
  std::array<uint8_t, 4096> config_{};  // guarded by mutex_
  std::array<uint8_t, 4096> wmask_{};   // bits the guest may write; constant after build
  uint64_t bar_gpa_ = 0;                // guarded by mutex_
  bool ioeventfds_registered_ = false;  // guarded by mutex_
  uint32_t device_feature_select_ = 0;  // guarded by mutex_
  uint32_t driver_feature_select_ = 0;  // guarded by mutex_
  uint16_t queue_select_ = 0;           // guarded by mutex_

  // Read by queue threads without mutex_.
  std::atomic<uint8_t> isr_{0};
  std::atomic<uint16_t> config_vector_{kVirtioNoVector};
  std::unique_ptr<std::atomic<uint16_t>[]> queue_vectors_;
};

}  // namespace tern::devices

// KvmVmServices: devices::VmServices over a KVM VM fd.
//   - ioeventfds: KVM_IOEVENTFD on the PIO or MMIO bus.
//   - MSI interrupts: each KvmMsiIrq owns an eventfd bound by KVM_IRQFD to
//     its own GSI; the GSI's route (KVM_SET_GSI_ROUTING, type MSI) carries
//     the address/data the guest programmed. The routing table is replaced
//     as a whole by that ioctl, so it is rebuilt from the legacy routes plus
//     every programmed MSI.
//   - legacy routes (install_legacy_routes(), at set-up): ISA IRQs 0..15 to
//     the PICs and GSIs 1..23 to the same IOAPIC pins, except that the PIT's
//     IRQ 0 goes to IOAPIC pin 2, as the MADT's interrupt source override
//     (ISA IRQ 0 -> GSI 2) tells the guest, and as PC firmware wires it.
//   - legacy lines: KVM_IRQ_LINE, or an irqfd on the GSI (create_irq_line,
//     virtio-mmio's edge-triggered interrupts).
//
// Threads: any; the routing table is guarded by mutex_.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>

#include "devices/vm_services.h"

namespace tern::vmm {

class KvmVmServices final : public devices::VmServices {
 public:
  explicit KvmVmServices(int vm_fd) : vm_fd_(vm_fd) {}

  SysResult<void> add_ioeventfd(devices::AddressSpace space, uint64_t addr, uint32_t len, int fd,
                                std::optional<uint64_t> datamatch) override;
  SysResult<void> remove_ioeventfd(devices::AddressSpace space, uint64_t addr, uint32_t len, int fd,
                                   std::optional<uint64_t> datamatch) override;
  SysResult<std::unique_ptr<devices::MsiIrq>> create_msi_irq() override;
  SysResult<std::unique_ptr<devices::IrqLine>> create_irq_line(uint32_t gsi) override;
  void set_irq_line(uint32_t irq, bool level) override;

  // Replaces KVM's identity default routes with the PC wiring above.
  [[nodiscard]] SysResult<void> install_legacy_routes();

  // Used by KvmMsiIrq.
  [[nodiscard]] SysResult<void> set_msi_route(uint32_t gsi, std::optional<devices::MsiMessage> message);
  int vm_fd() const { return vm_fd_; }

  static constexpr uint32_t kLegacyGsis = 24;  // IOAPIC pins

 private:
  SysResult<void> ioeventfd(devices::AddressSpace space, uint64_t addr, uint32_t len, int fd,
                            std::optional<uint64_t> datamatch, uint32_t flags);
  SysResult<void> commit_routes();  // mutex_ held

  const int vm_fd_;
  std::mutex mutex_;
  uint32_t next_gsi_ = kLegacyGsis;                       // guarded by mutex_
  std::map<uint32_t, devices::MsiMessage> msi_routes_;  // guarded by mutex_
};

}  // namespace tern::vmm

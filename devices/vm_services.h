// VmServices: what a device may ask of the hypervisor, without knowing KVM.
// vmm/ implements it over the KVM VM fd; tests implement it with fakes.
//
// Threads: any; implementations serialize internally.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>

#include "base/error.h"

namespace tern::devices {

enum class AddressSpace { Pio, Mmio };

struct MsiMessage {
  uint64_t address = 0;
  uint32_t data = 0;
};

// An interrupt delivered as an MSI through an irqfd: trigger() writes the
// eventfd, and KVM injects the message without a trip through user space.
// Destroying it removes the irqfd and its route.
class MsiIrq {
 public:
  virtual ~MsiIrq() = default;
  // Programs (or reprograms) the message the guest wrote into its MSI-X
  // table entry. nullopt masks the vector: trigger() is then a no-op.
  [[nodiscard]] virtual SysResult<void> set_message(std::optional<MsiMessage> message) = 0;
  virtual void trigger() = 0;
  // The irqfd, for device threads that signal it directly.
  virtual int eventfd() const = 0;
};

// An edge on a legacy interrupt line (an IOAPIC input), raised through an
// irqfd bound to that GSI, so KVM injects it without a trip through user
// space. Destroying it removes the irqfd.
class IrqLine {
 public:
  virtual ~IrqLine() = default;
  virtual void trigger() = 0;
};

class VmServices {
 public:
  virtual ~VmServices() = default;

  // A guest write of `len` bytes at `addr` signals `fd` instead of exiting to
  // user space (KVM_IOEVENTFD). With `datamatch`, only writes of that value.
  [[nodiscard]] virtual SysResult<void> add_ioeventfd(AddressSpace space, uint64_t addr,
                                                      uint32_t len, int fd,
                                                      std::optional<uint64_t> datamatch) = 0;
  [[nodiscard]] virtual SysResult<void> remove_ioeventfd(AddressSpace space, uint64_t addr,
                                                         uint32_t len, int fd,
                                                         std::optional<uint64_t> datamatch) = 0;

  // Allocates a GSI with an MSI route and an irqfd bound to it.
  [[nodiscard]] virtual SysResult<std::unique_ptr<MsiIrq>> create_msi_irq() = 0;

  // Binds an irqfd to IOAPIC input `gsi` (virtio-mmio's interrupt line).
  [[nodiscard]] virtual SysResult<std::unique_ptr<IrqLine>> create_irq_line(uint32_t gsi) = 0;

  // Sets the level of a legacy IOAPIC input (the UART's IRQ 4).
  virtual void set_irq_line(uint32_t irq, bool level) = 0;
};

}  // namespace tern::devices

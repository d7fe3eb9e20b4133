// MsixTable: the MSI-X table, pending-bit array and capability control bits
// of one PCI function (PCI Local Bus 3.0, 6.8.2), backed by one MsiIrq
// (an irqfd with an MSI route) per vector. The function's device model
// decodes where the table and the PBA sit in its BAR and forwards those
// accesses here; deliver() raises a vector, or marks it pending while it or
// the function is masked, and unmasking sends what is pending.
//
// Threads: any; internally locked (the lock is never held while calling
// out, except into the MsiIrq, which takes only its own).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "base/error.h"
#include "devices/vm_services.h"

namespace tern::devices {

inline constexpr uint8_t kPciCapMsix = 0x11;
inline constexpr uint16_t kMsixEnable = 0x8000;
inline constexpr uint16_t kMsixFunctionMask = 0x4000;
inline constexpr uint64_t kMsixEntrySize = 16;

class MsixTable {
 public:
  // One irq per vector; `on_error` hears an MSI route that failed to program.
  [[nodiscard]] static SysResult<std::unique_ptr<MsixTable>> create(
      VmServices& vm, uint16_t vectors, std::function<void(const std::string&)> on_error);

  uint16_t vectors() const { return vectors_; }
  // The capability's Message Control word changed (enable, function mask).
  void set_control(uint16_t control);
  // Accesses at `offset` from the start of the table / of the PBA.
  void table_read(uint64_t offset, std::span<uint8_t> data);
  void table_write(uint64_t offset, std::span<const uint8_t> data);
  void pba_read(uint64_t offset, std::span<uint8_t> data);
  // Raises `vector` (ignored when out of range or MSI-X is off; no INTx).
  void deliver(uint16_t vector);
  // A device reset: nothing stays pending.
  void clear_pending();

 private:
  struct Entry {
    uint32_t addr_lo = 0, addr_hi = 0, data = 0, control = 1;  // masked at reset
  };
  MsixTable(uint16_t vectors, std::function<void(const std::string&)> on_error);
  void fire(uint16_t vector);  // mutex_ held
  void deliver_unmasked_pending();  // mutex_ held

  const uint16_t vectors_;
  const std::function<void(const std::string&)> on_error_;
  std::mutex mutex_;
  bool enabled_ = false;                       // guarded by mutex_
  bool function_masked_ = false;               // guarded by mutex_
  std::vector<Entry> table_;                   // guarded by mutex_
  std::vector<bool> pending_;                  // guarded by mutex_
  std::vector<bool> dirty_;                    // guarded by mutex_: message not yet programmed
  std::vector<std::unique_ptr<MsiIrq>> irqs_;  // guarded by mutex_
};

}  // namespace tern::devices

// PciDevice: one PCI function as the PCI root (devices/pci/) sees it. The
// root owns config-space routing (type-1 ports and ECAM), BAR placement in
// the MMIO window, and mapping BAR accesses back to the device as offsets.
//
// Threads: config and BAR accesses come from vCPU threads, possibly several
// at once; devices protect their own state.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

namespace tern::devices {

struct PciBarInfo {
  uint8_t index = 0;      // BAR number (0..5); a 64-bit BAR uses index and index+1
  uint64_t size = 0;      // power of two, >= 4096 for MMIO
  bool is_64bit = true;
  bool prefetchable = false;
};

class PciDevice {
 public:
  virtual ~PciDevice() = default;
  virtual std::string_view name() const = 0;

  // The MMIO BARs the device wants; the root assigns their addresses.
  virtual std::vector<PciBarInfo> bars() const = 0;

  // Config space (4 KiB, as in ECAM). `offset` + data.size() <= 4096 and
  // accesses are naturally aligned. BAR registers are handled by the root
  // (sizing and placement) and never reach the device.
  virtual void config_read(uint32_t offset, std::span<uint8_t> data) = 0;
  virtual void config_write(uint32_t offset, std::span<const uint8_t> data) = 0;

  // An access at `offset` inside BAR `bar`.
  virtual void bar_read(uint8_t bar, uint64_t offset, std::span<uint8_t> data) = 0;
  virtual void bar_write(uint8_t bar, uint64_t offset, std::span<const uint8_t> data) = 0;

  // Told where BAR `bar` now lives (initial placement or a guest reprogram),
  // so the device can (re)register ioeventfds at absolute addresses.
  virtual void bar_placed(uint8_t bar, uint64_t gpa) = 0;
};

}  // namespace tern::devices

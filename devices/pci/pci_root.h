// PciRoot: PCI segment 0, bus 0. It owns config-space routing (type-1 ports
// 0xcf8/0xcfc and ECAM), the host bridge at 00:00.0, BAR registers (sizing
// and placement in the 32-bit MMIO window) and the routing of BAR accesses
// back to devices as (bar, offset). Devices never see BAR registers.
//
// The machine registers the three IoHandlers it exposes on its buses:
//   type1_handler()  at PIO  [0xcf8, 0xd00)     (address at 0xcf8, data 0xcfc..0xcff)
//   ecam_handler()   at MMIO [ecam_base, +1 MiB)
//   mmio_handler()   at MMIO [window_base, window_base + window_size)
//
// Threads: add_device() at set-up, before any vCPU runs. The handlers are
// called from vCPU threads concurrently: config accesses take mutex_
// exclusively, BAR routing takes it shared.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <shared_mutex>
#include <vector>

#include <expected>
#include "devices/io_handler.h"
#include "devices/pci/pci_device.h"

namespace tern::devices {

enum class PciError { BusFull, BadBar, WindowFull };
const char* pci_error_text(PciError error);

class PciRoot {
 public:
  static constexpr uint64_t kDefaultWindowBase = 0xC000'0000;
  static constexpr uint64_t kDefaultWindowSize = 0x2000'0000;
  static constexpr uint64_t kDefaultEcamBase = 0xE000'0000;
  static constexpr uint64_t kEcamBusSize = 1 << 20;  // 32 devices x 8 functions x 4 KiB
  static constexpr uint16_t kType1Base = 0xcf8;
  static constexpr uint16_t kType1Size = 8;

  PciRoot(uint64_t window_base = kDefaultWindowBase, uint64_t window_size = kDefaultWindowSize);
  ~PciRoot();
  PciRoot(const PciRoot&) = delete;
  PciRoot& operator=(const PciRoot&) = delete;

  // Places `device` at the next free slot of bus 0 (function 0), assigns its
  // BARs in the window and tells it where they are. Returns the slot number.
  [[nodiscard]] std::expected<uint8_t, PciError> add_device(std::unique_ptr<PciDevice> device);

  IoHandler& type1_handler() { return type1_; }
  IoHandler& ecam_handler() { return ecam_; }
  IoHandler& mmio_handler() { return mmio_; }

  PciDevice* device(uint8_t slot) const;
  // Config-space access by (device, function) on bus 0, as both mechanisms
  // use it. `offset` + data.size() <= 4096.
  void config_read(uint8_t slot, uint8_t function, uint32_t offset, std::span<uint8_t> data);
  void config_write(uint8_t slot, uint8_t function, uint32_t offset,
                    std::span<const uint8_t> data);

 private:
  struct Bar {
    PciBarInfo info;
    uint64_t address = 0;  // current guest physical address
    uint64_t placed = 0;   // address last reported through bar_placed()
    bool valid = false;
  };
  struct Slot {
    std::unique_ptr<PciDevice> device;
    std::array<Bar, 6> bars;  // indexed by BAR register; a 64-bit BAR uses index, index+1
    bool memory_enabled = false;
  };

  struct Type1Target {
    uint8_t slot;
    uint8_t function;
    uint32_t reg;
  };
  class Type1Handler final : public IoHandler {
   public:
    explicit Type1Handler(PciRoot& root) : root_(root) {}
    std::string_view name() const override { return "pci-type1"; }
    void read(uint64_t offset, std::span<uint8_t> data) override;
    void write(uint64_t offset, std::span<const uint8_t> data) override;

   private:
    std::optional<Type1Target> target(uint64_t offset, size_t len) const;
    PciRoot& root_;
  };
  class EcamHandler final : public IoHandler {
   public:
    explicit EcamHandler(PciRoot& root) : root_(root) {}
    std::string_view name() const override { return "pci-ecam"; }
    void read(uint64_t offset, std::span<uint8_t> data) override;
    void write(uint64_t offset, std::span<const uint8_t> data) override;

   private:
    PciRoot& root_;
  };
  class MmioHandler final : public IoHandler {
   public:
    explicit MmioHandler(PciRoot& root) : root_(root) {}
    std::string_view name() const override { return "pci-mmio-window"; }
    void read(uint64_t offset, std::span<uint8_t> data) override;
    void write(uint64_t offset, std::span<const uint8_t> data) override;

   private:
    PciRoot& root_;
  };

  uint32_t bar_register(const Slot& slot, unsigned reg) const;  // mutex_ held
  void write_bar_register(Slot& slot, unsigned reg, uint32_t value);  // mutex_ held
  void update_placement(Slot& slot);  // mutex_ held
  void host_bridge_read(uint32_t offset, std::span<uint8_t> data) const;
  // Finds the BAR containing [gpa, gpa + len); mutex_ held (shared).
  const Slot* route(uint64_t gpa, uint64_t len, uint8_t& bar, uint64_t& offset) const;

  const uint64_t window_base_;
  const uint64_t window_size_;
  uint64_t next_bar_ = 0;  // allocation cursor in the window; set-up only

  mutable std::shared_mutex mutex_;
  std::array<Slot, 32> slots_;  // guarded by mutex_; slot 0 is the host bridge
  uint32_t type1_address_ = 0;  // guarded by mutex_

  Type1Handler type1_{*this};
  EcamHandler ecam_{*this};
  MmioHandler mmio_{*this};
};

}  // namespace tern::devices

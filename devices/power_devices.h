// The guest's ways to power off and reset (docs/vmm.md, "Exit status"):
//   AcpiPowerDevice: the hardware-reduced ACPI registers the FADT points at
//     (ACPI 6.x, 4.8.3.7 sleep control/status, 4.8.3.6 reset register):
//     port +0 SLEEP_CONTROL_REG (SLP_TYPx in bits 2..4, SLP_EN bit 5),
//     +1 SLEEP_STATUS_REG, +2 RESET_REG (value 1 resets). Sleep type 5 is
//     S5 (the DSDT's _S5_ package), which powers off.
//   I8042: the keyboard controller's reset line (command 0xFE on port
//     0x64); data port 0x60 reads 0 and the status port reads "empty".
//   GuestExitDevice: one byte written to it ends the VM with that status
//     (in the spirit of QEMU's isa-debug-exit, at the same default port
//     0x501; tern maps the byte to its exit status itself, docs/vmm.md).
//     Reads return 0. A Linux guest writes it through /dev/port.
//   PowerButton: the Generic Event Device the DSDT describes as \_SB.GED0
//     (arch/x86_64/acpi.cpp): press() raises an edge on its interrupt line,
//     and the guest's _EVT notifies the PNP0C0C button, which a guest with
//     userspace handling (systemd-logind, acpid) turns into a clean
//     shutdown. It has no registers: the line carries one event only, so
//     the guest has nothing to read and no register to get wrong.
//
// Threads: the I/O handlers on vCPU threads, stateless apart from the sink;
// PowerButton::press() from any thread (the API's control thread).
#pragma once

#include <cstdint>
#include <memory>

#include "devices/io_handler.h"
#include "devices/power.h"
#include "devices/vm_services.h"

namespace tern::devices {

class AcpiPowerDevice final : public IoHandler {
 public:
  explicit AcpiPowerDevice(PowerSink& sink) : sink_(sink) {}
  std::string_view name() const override { return "acpi-power"; }
  void read(uint64_t offset, std::span<uint8_t> data) override;
  void write(uint64_t offset, std::span<const uint8_t> data) override;

  static constexpr uint64_t kSize = 3;
  static constexpr uint8_t kS5SleepType = 5;
  static constexpr uint8_t kResetValue = 1;

 private:
  PowerSink& sink_;
};

class I8042 final : public IoHandler {
 public:
  explicit I8042(PowerSink& sink) : sink_(sink) {}
  std::string_view name() const override { return "i8042"; }
  // Mapped at [0x60, 0x65): offset 0 is the data port, offset 4 the
  // command/status port. Port 0x61 (the PIT's speaker gate) is served by
  // KVM's in-kernel PIT and never reaches user space; 0x62/0x63 read ones.
  void read(uint64_t offset, std::span<uint8_t> data) override;
  void write(uint64_t offset, std::span<const uint8_t> data) override;

  static constexpr uint64_t kSize = 5;
  static constexpr uint64_t kDataOffset = 0, kCommandOffset = 4;
  static constexpr uint8_t kResetCommand = 0xfe;

 private:
  PowerSink& sink_;
};

class GuestExitDevice final : public IoHandler {
 public:
  explicit GuestExitDevice(PowerSink& sink) : sink_(sink) {}
  std::string_view name() const override { return "guest-exit"; }
  void read(uint64_t offset, std::span<uint8_t> data) override;
  void write(uint64_t offset, std::span<const uint8_t> data) override;

  static constexpr uint64_t kSize = 1;

 private:
  PowerSink& sink_;
};

class PowerButton final {
 public:
  explicit PowerButton(std::unique_ptr<IrqLine> line) : line_(std::move(line)) {}
  // One press: an edge the guest sees once its evged driver is bound; before
  // that (early boot) the IOAPIC input is masked and the press is lost, as
  // on hardware.
  void press() { line_->trigger(); }

 private:
  std::unique_ptr<IrqLine> line_;
};

}  // namespace tern::devices

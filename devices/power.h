// GuestPowerEvent and PowerSink: how a device (ACPI sleep/reset registers,
// i8042, the exit device) tells the VMM that the guest asked to power off or reset. The VMM
// implements the sink; it ends the VM with the matching exit status.
//
// Threads: request() is called from vCPU threads; implementations are
// thread-safe and return promptly (they only record the request and wake
// the VMM).
#pragma once

#include <cstdint>

namespace tern::devices {

enum class GuestPowerEvent { PowerOff, Reset };

class PowerSink {
 public:
  virtual ~PowerSink() = default;
  virtual void request(GuestPowerEvent event) = 0;
  // The guest ends the VM with a status of its choosing (GuestExitDevice).
  virtual void request_exit(uint8_t status) = 0;
};

}  // namespace tern::devices

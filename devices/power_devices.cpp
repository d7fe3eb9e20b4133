#include "devices/power_devices.h"

#include <cstring>

namespace tern::devices {

void AcpiPowerDevice::read(uint64_t, std::span<uint8_t> data) {
  // SLEEP_STATUS (WAK_STS) never set: the guest does not wake from S5; the
  // control and reset registers read as zero.
  std::memset(data.data(), 0, data.size());
}

void AcpiPowerDevice::write(uint64_t offset, std::span<const uint8_t> data) {
  for (size_t i = 0; i < data.size(); ++i) {
    uint64_t reg = offset + i;
    uint8_t v = data[i];
    if (reg == 0) {
      constexpr uint8_t kSlpEn = 1u << 5;
      uint8_t type = (v >> 2) & 7;
      if ((v & kSlpEn) && type == kS5SleepType) sink_.request(GuestPowerEvent::PowerOff);
    } else if (reg == 2 && v == kResetValue) {
      sink_.request(GuestPowerEvent::Reset);
    }
  }
}

void I8042::read(uint64_t offset, std::span<uint8_t> data) {
  // Data reads 0; status 0: output buffer empty, input buffer empty (so a
  // driver waiting to send a command never spins).
  std::memset(data.data(), (offset == kDataOffset || offset == kCommandOffset) ? 0 : 0xff, data.size());
}

void I8042::write(uint64_t offset, std::span<const uint8_t> data) {
  if (offset == kCommandOffset && data.size() == 1 && data[0] == kResetCommand) {
    sink_.request(GuestPowerEvent::Reset);
  }
}

void GuestExitDevice::read(uint64_t, std::span<uint8_t> data) { std::memset(data.data(), 0, data.size()); }

void GuestExitDevice::write(uint64_t offset, std::span<const uint8_t> data) {
  // A wider access starting at the port carries the status in its low byte.
  if (offset == 0 && !data.empty()) sink_.request_exit(data[0]);
}

}  // namespace tern::devices

// IoHandler: a device region on the port-I/O or MMIO bus. A device sees
// offsets from the start of its region, never absolute addresses; the bus
// (devices/io_bus.h) places it at [base, base + size) and rebases.
//
// Threads: read()/write() are called from vCPU threads, possibly several at
// once; a handler protects its own state.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

namespace tern::devices {

class IoHandler {
 public:
  virtual ~IoHandler() = default;
  virtual std::string_view name() const = 0;
  // Fills `data` (1, 2, 4 or 8 bytes) with what the guest reads at `offset`.
  virtual void read(uint64_t offset, std::span<uint8_t> data) = 0;
  virtual void write(uint64_t offset, std::span<const uint8_t> data) = 0;
};

}  // namespace tern::devices

// IoBus: the port-I/O or MMIO address space as the vCPUs see it. Ranges
// [base, base + size) map to IoHandlers, which get offsets from base.
//
// Threads: add() during set-up only, before any vCPU runs (it aborts once
// seal() was called); read()/write() afterwards from any number of vCPU
// threads at once, without locking, because the map no longer changes.
// Devices whose placement changes at run time (PCI BARs) sit behind one
// fixed range owned by the PCI root, which routes inside it.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "devices/io_handler.h"

namespace tern::devices {

class IoBus {
 public:
  // Maps [base, base + size) to `handler` (not owned; must outlive the bus).
  // Returns false when the range is empty, wraps, or overlaps a mapped one.
  [[nodiscard]] bool add(uint64_t base, uint64_t size, IoHandler& handler);
  // Ends set-up; add() after this is a broken invariant.
  void seal() { sealed_ = true; }

  // An access of data.size() bytes at `addr`. Returns false when no range
  // holds all of it: reads then see all ones (an absent device), writes are
  // dropped.
  bool read(uint64_t addr, std::span<uint8_t> data) const;
  bool write(uint64_t addr, std::span<const uint8_t> data) const;

  struct Range {
    uint64_t base = 0;
    uint64_t size = 0;
    IoHandler* handler = nullptr;
  };
  // The range holding [addr, addr + len), or nullptr.
  const Range* find(uint64_t addr, uint64_t len) const;

 private:
  std::vector<Range> ranges_;  // sorted by base, disjoint
  bool sealed_ = false;
};

}  // namespace tern::devices

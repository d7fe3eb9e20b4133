#include "devices/io_bus.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>

namespace tern::devices {

bool IoBus::add(uint64_t base, uint64_t size, IoHandler& handler) {
  if (sealed_) std::abort();
  if (size == 0 || base + size < base) return false;
  auto it = std::lower_bound(ranges_.begin(), ranges_.end(), base,
                             [](const Range& r, uint64_t b) { return r.base < b; });
  if (it != ranges_.end() && it->base < base + size) return false;
  if (it != ranges_.begin()) {
    const Range& prev = *(it - 1);
    if (prev.base + prev.size > base) return false;
  }
  ranges_.insert(it, Range{base, size, &handler});
  return true;
}

const IoBus::Range* IoBus::find(uint64_t addr, uint64_t len) const {
  auto it = std::upper_bound(ranges_.begin(), ranges_.end(), addr,
                             [](uint64_t a, const Range& r) { return a < r.base; });
  if (it == ranges_.begin()) return nullptr;
  const Range& r = *(it - 1);
  uint64_t off = addr - r.base;
  if (off >= r.size || len > r.size - off) return nullptr;
  return &r;
}

bool IoBus::read(uint64_t addr, std::span<uint8_t> data) const {
  const Range* r = find(addr, data.size());
  if (!r) {
    std::memset(data.data(), 0xff, data.size());
    return false;
  }
  r->handler->read(addr - r->base, data);
  return true;
}

bool IoBus::write(uint64_t addr, std::span<const uint8_t> data) const {
  const Range* r = find(addr, data.size());
  if (!r) return false;
  r->handler->write(addr - r->base, data);
  return true;
}

}  // namespace tern::devices

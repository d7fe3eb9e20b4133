// GuestMemory: the one bounds-checked view of guest RAM. Every guest physical
// address a device uses goes through span()/read()/write(); nothing else
// dereferences guest memory. The mappings are owned by vmm/ (GuestRam); this
// view is cheap to copy and is valid as long as the VM exists.
//
// Threads: any. The guest may change memory concurrently, so callers read a
// guest-controlled value once, then validate the copy.
#pragma once

#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <type_traits>
#include <vector>

namespace tern::devices {

class GuestMemory {
 public:
  struct Region {
    uint64_t gpa = 0;       // guest physical start
    uint64_t size = 0;      // bytes
    uint8_t* host = nullptr;  // host mapping of the region
  };

  GuestMemory() = default;
  explicit GuestMemory(std::vector<Region> regions) : regions_(std::move(regions)) {}

  // Host bytes for [gpa, gpa + len), or nullopt unless the whole range lies
  // inside one region. len == 0 is valid inside or at the end of a region.
  std::optional<std::span<uint8_t>> span(uint64_t gpa, uint64_t len) const {
    for (const Region& r : regions_) {
      if (gpa < r.gpa) continue;
      uint64_t off = gpa - r.gpa;
      if (off > r.size || len > r.size - off) continue;
      return std::span<uint8_t>(r.host + off, len);
    }
    return std::nullopt;
  }

  template <class T>
    requires std::is_trivially_copyable_v<T>
  std::optional<T> read(uint64_t gpa) const {
    auto s = span(gpa, sizeof(T));
    if (!s) return std::nullopt;
    T value;
    std::memcpy(&value, s->data(), sizeof(T));
    return value;
  }

  template <class T>
    requires std::is_trivially_copyable_v<T>
  bool write(uint64_t gpa, const T& value) const {
    auto s = span(gpa, sizeof(T));
    if (!s) return false;
    std::memcpy(s->data(), &value, sizeof(T));
    return true;
  }

  const std::vector<Region>& regions() const { return regions_; }

 private:
  std::vector<Region> regions_;
};

}  // namespace tern::devices

// GuestRam: the guest's RAM as anonymous host mappings registered with KVM
// (KVM_SET_USER_MEMORY_REGION), laid out per docs/vmm.md: [0, min(size,
// 3 GiB)) and the rest from 4 GiB. It owns the mappings (RAII munmap) and
// hands out the bounds-checked devices::GuestMemory view. It must outlive
// every device and vCPU that uses that view.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "base/error.h"
#include "devices/guest_memory.h"

namespace tern::vmm {

class GuestRam {
 public:
  // `huge_pages`: each region is 2 MiB-aligned in the host and advised
  // MADV_HUGEPAGE (a hint; a kernel without THP keeps 4 KiB pages).
  [[nodiscard]] static SysResult<GuestRam> create(int vm_fd, uint64_t size, bool huge_pages = true);
  ~GuestRam();
  GuestRam(GuestRam&& other) noexcept;
  GuestRam& operator=(GuestRam&&) = delete;
  GuestRam(const GuestRam&) = delete;

  devices::GuestMemory memory() const;
  // Host view of guest physical [0, low end): where the kernel and boot
  // structures go.
  std::span<uint8_t> low() const { return {regions_.front().host, regions_.front().size}; }
  uint64_t size() const { return size_; }

 private:
  GuestRam() = default;
  uint64_t size_ = 0;
  std::vector<devices::GuestMemory::Region> regions_;
};

}  // namespace tern::vmm

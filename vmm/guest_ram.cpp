#include "vmm/guest_ram.h"

#include <linux/kvm.h>
#include <sys/mman.h>

#include "arch/x86_64/layout.h"
#include "vmm/kvm.h"

namespace tern::vmm {

namespace ax = tern::arch::x86_64;

SysResult<GuestRam> GuestRam::create(int vm_fd, uint64_t size) {
  GuestRam ram;
  ram.size_ = size;
  struct Want {
    uint64_t gpa, size;
  };
  std::vector<Want> want{{0, ax::low_ram_size(size)}};
  if (uint64_t high = ax::high_ram_size(size)) want.push_back({ax::kHighRamStart, high});
  for (uint32_t slot = 0; slot < want.size(); ++slot) {
    // MAP_NORESERVE: a guest touches its RAM lazily; KVM faults pages in.
    void* p = ::mmap(nullptr, want[slot].size, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) return std::unexpected(SysError::from_errno("mmap guest RAM"));
    ram.regions_.push_back({want[slot].gpa, want[slot].size, static_cast<uint8_t*>(p)});
    // Guest RAM is not worth a core dump, and is never shared with a child.
    ::madvise(p, want[slot].size, MADV_DONTDUMP);
    ::madvise(p, want[slot].size, MADV_DONTFORK);
    kvm_userspace_memory_region region{};
    region.slot = slot;
    region.guest_phys_addr = want[slot].gpa;
    region.memory_size = want[slot].size;
    region.userspace_addr = reinterpret_cast<uint64_t>(p);
    if (auto r = kvm_ioctl(vm_fd, KVM_SET_USER_MEMORY_REGION, "KVM_SET_USER_MEMORY_REGION", &region); !r) {
      return std::unexpected(r.error());
    }
  }
  return ram;
}

GuestRam::GuestRam(GuestRam&& other) noexcept
    : size_(other.size_), regions_(std::move(other.regions_)) {
  other.regions_.clear();
}

GuestRam::~GuestRam() {
  for (auto& r : regions_) ::munmap(r.host, r.size);
}

devices::GuestMemory GuestRam::memory() const { return devices::GuestMemory(regions_); }

}  // namespace tern::vmm

#include "vmm/guest_ram.h"

#include <linux/kvm.h>
#include <sys/mman.h>

#include "arch/x86_64/layout.h"
#include "vmm/kvm.h"

namespace tern::vmm {

namespace ax = tern::arch::x86_64;

namespace {

constexpr uint64_t kHugePage = 2ull << 20;

// An anonymous mapping of `size` bytes whose start is a multiple of
// `align`: KVM maps a guest 2 MiB page with one nested entry only when the
// host address and the guest address agree modulo 2 MiB (guest regions
// start 2 MiB-aligned). Over-maps by `align` and gives back the ends.
SysResult<uint8_t*> map_aligned(uint64_t size, uint64_t align) {
  // MAP_NORESERVE: a guest touches its RAM lazily; KVM faults pages in.
  void* p = ::mmap(nullptr, size + align, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) return std::unexpected(SysError::from_errno("mmap guest RAM"));
  auto start = reinterpret_cast<uintptr_t>(p);
  uintptr_t aligned = (start + align - 1) & ~(align - 1);
  // munmap of a part of a private anonymous mapping we own cannot fail
  // short of a bad range, which the arithmetic above rules out.
  if (aligned > start) ::munmap(p, aligned - start);
  if (uintptr_t tail = start + size + align - (aligned + size); tail > 0) {
    ::munmap(reinterpret_cast<void*>(aligned + size), tail);
  }
  return reinterpret_cast<uint8_t*>(aligned);
}

}  // namespace

SysResult<GuestRam> GuestRam::create(int vm_fd, uint64_t size, bool huge_pages) {
  GuestRam ram;
  ram.size_ = size;
  struct Want {
    uint64_t gpa, size;
  };
  std::vector<Want> want{{0, ax::low_ram_size(size)}};
  if (uint64_t high = ax::high_ram_size(size)) want.push_back({ax::kHighRamStart, high});
  for (uint32_t slot = 0; slot < want.size(); ++slot) {
    auto mapped = map_aligned(want[slot].size, huge_pages ? kHugePage : 4096);
    if (!mapped) return std::unexpected(mapped.error());
    uint8_t* p = *mapped;
    ram.regions_.push_back({want[slot].gpa, want[slot].size, p});
    // Guest RAM is not worth a core dump, and is never shared with a child.
    ::madvise(p, want[slot].size, MADV_DONTDUMP);
    ::madvise(p, want[slot].size, MADV_DONTFORK);
    // A hint: EINVAL on a kernel built without THP leaves 4 KiB pages.
    if (huge_pages) ::madvise(p, want[slot].size, MADV_HUGEPAGE);
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

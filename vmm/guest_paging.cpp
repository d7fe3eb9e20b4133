#include "vmm/guest_paging.h"

#include <array>
#include <cstring>

namespace tern::vmm {

namespace {

constexpr uint64_t kCr0Pe = 1ull << 0, kCr0Wp = 1ull << 16, kCr0Pg = 1ull << 31;
constexpr uint64_t kCr4Pse = 1ull << 4, kCr4Pae = 1ull << 5, kCr4La57 = 1ull << 12;
constexpr uint64_t kCr4Smep = 1ull << 20, kCr4Smap = 1ull << 21;
constexpr uint64_t kEferLma = 1ull << 10, kEferNxe = 1ull << 11;
constexpr uint64_t kRflagsAc = 1ull << 18;
constexpr uint64_t kPresent = 1ull << 0, kWritable = 1ull << 1, kUserPage = 1ull << 2;
constexpr uint64_t kAccessed = 1ull << 5, kDirty = 1ull << 6, kPageSize = 1ull << 7, kNoExec = 1ull << 63;
constexpr uint64_t kAddr = 0x000ffffffffff000ull;  // bits 51:12 of an 8-byte entry
// PAE PDPTE bits that must be 0: 2:1, 8:5, 63 (SDM vol. 3A, 4.4.1).
constexpr uint64_t kPdpteReserved = 0x1e6ull | kNoExec;

// A paging-structure entry as the walk read it.
struct Entry {
  uint8_t* host = nullptr;
  uint64_t value = 0;
  unsigned size = 0;
};

std::expected<Entry, WalkStop> read_entry(const devices::GuestMemory& memory, uint64_t gpa, unsigned size) {
  auto s = memory.span(gpa, size);
  if (!s) return std::unexpected(WalkStop{WalkStop::Kind::TableNotRam, 0, gpa});
  Entry e{s->data(), 0, size};
  std::memcpy(&e.value, s->data(), size);  // read once: the guest may change it meanwhile
  return e;
}

// Sets `flags` in an entry as the CPU does, with a locked OR, so that a
// concurrent update by another vCPU (or the guest clearing A to age pages)
// is neither lost nor undone.
void set_flags(const Entry& e, uint64_t flags) {
  if ((e.value & flags) == flags) return;
  const auto at = reinterpret_cast<uintptr_t>(e.host);
  if (e.size == 8 && at % 8 == 0) {
    __atomic_fetch_or(reinterpret_cast<uint64_t*>(e.host), flags, __ATOMIC_SEQ_CST);
  } else if (e.size == 4 && at % 4 == 0) {
    __atomic_fetch_or(reinterpret_cast<uint32_t*>(e.host), static_cast<uint32_t>(flags), __ATOMIC_SEQ_CST);
  } else {
    // A RAM region that is not naturally aligned on the host (never in
    // tern, whose regions are page-aligned): a plain read-modify-write.
    uint64_t v = 0;
    std::memcpy(&v, e.host, e.size);
    v |= flags;
    std::memcpy(e.host, &v, e.size);
  }
}

}  // namespace

std::expected<uint64_t, WalkStop> walk_guest_page_tables(const devices::GuestMemory& memory, const PagingRegs& regs,
                                                         uint64_t linear, Access access) {
  if (!(regs.cr0 & kCr0Pg) || !(regs.cr0 & kCr0Pe)) return linear;
  const bool write = access.kind == AccessKind::Write;
  const bool fetch = access.kind == AccessKind::Fetch;
  const bool user = regs.cpl == 3 && !access.implicit_supervisor;
  const bool lma = regs.efer & kEferLma;
  const bool pae = (regs.cr4 & kCr4Pae) || lma;  // IA-32e mode needs CR4.PAE; KVM enforces it
  const bool nxe = regs.efer & kEferNxe;
  // I/D reports a fetch only where fetches can be refused (SDM vol. 3A, 4.7).
  const uint32_t base_error = (write ? kPfWrite : 0) | (user ? kPfUser : 0) |
                              (fetch && ((regs.cr4 & kCr4Smep) || (pae && nxe)) ? kPfFetch : 0);
  auto fault = [&](uint32_t bits) {
    return std::unexpected(WalkStop{WalkStop::Kind::PageFault, base_error | bits, 0});
  };

  std::array<Entry, 5> used{};
  size_t n_used = 0;
  bool writable = true, user_page = true, no_exec = false;
  uint64_t gpa = 0;

  if (!pae) {
    // 32-bit paging: 4-byte entries, a page directory then a page table.
    uint64_t table = regs.cr3 & 0xfffff000ull;
    for (int level = 1; level >= 0; --level) {
      auto e = read_entry(memory, table + ((linear >> (12 + 10 * level)) & 0x3ff) * 4, 4);
      if (!e) return std::unexpected(e.error());
      const uint64_t v = e->value;
      if (!(v & kPresent)) return fault(0);
      used[n_used++] = *e;
      writable = writable && (v & kWritable);
      user_page = user_page && (v & kUserPage);
      if (level == 1 && (v & kPageSize) && (regs.cr4 & kCr4Pse)) {
        // A 4 MiB page: address bits 31:22, and 39:32 from entry bits 20:13 (PSE-36).
        gpa = (v & 0xffc00000ull) | (((v >> 13) & 0xff) << 32) | (linear & 0x3fffff);
        break;
      }
      if (level == 0) gpa = (v & 0xfffff000ull) | (linear & 0xfff);
      table = v & 0xfffff000ull;
    }
  } else {
    int levels = 0;
    uint64_t table = 0;
    if (lma) {
      levels = (regs.cr4 & kCr4La57) ? 5 : 4;
      table = regs.cr3 & kAddr;
    } else {
      // PAE paging: the PDPTE for bits 31:30, from the table at CR3 bits 31:5.
      auto e = read_entry(memory, (regs.cr3 & 0xffffffe0ull) + ((linear >> 30) & 3) * 8, 8);
      if (!e) return std::unexpected(e.error());
      if (!(e->value & kPresent)) return fault(0);
      if (e->value & kPdpteReserved) return fault(kPfPresent | kPfReserved);
      levels = 2;
      table = e->value & kAddr;
    }
    for (int level = levels - 1; level >= 0; --level) {
      auto e = read_entry(memory, table + ((linear >> (12 + 9 * level)) & 511) * 8, 8);
      if (!e) return std::unexpected(e.error());
      const uint64_t v = e->value;
      if (!(v & kPresent)) return fault(0);
      // Level 2 is a PDPTE (PS: 1 GiB), 1 a PDE (PS: 2 MiB), 0 a PTE; 3 and
      // 4 (PML4E, PML5E) have PS reserved.
      const bool leaf = level == 0 || (level <= 2 && (v & kPageSize));
      uint64_t reserved = nxe ? 0 : kNoExec;
      if (level >= 3) reserved |= kPageSize;
      if (leaf && level == 2) reserved |= 0x3fffe000ull;  // bits 29:13 of a 1 GiB page
      if (leaf && level == 1) reserved |= 0x1fe000ull;    // bits 20:13 of a 2 MiB page
      if (v & reserved) return fault(kPfPresent | kPfReserved);
      used[n_used++] = *e;
      writable = writable && (v & kWritable);
      user_page = user_page && (v & kUserPage);
      no_exec = no_exec || (nxe && (v & kNoExec));
      if (leaf) {
        const uint64_t offset_mask = (1ull << (12 + 9 * level)) - 1;
        gpa = (v & kAddr & ~offset_mask) | (linear & offset_mask);
        break;
      }
      table = v & kAddr;
    }
  }

  // Access rights (SDM vol. 3A, 4.6). A user-mode address is one with U/S
  // set at every level. SMAP blocks supervisor data accesses to such
  // addresses when RFLAGS.AC is clear, and always at CPL 3 (which only
  // implicit supervisor accesses can be there).
  bool allowed = true;
  if (user) {
    allowed = user_page && (!write || writable) && (!fetch || !no_exec);
  } else if (fetch) {
    allowed = !no_exec && !(user_page && (regs.cr4 & kCr4Smep));
  } else {
    const bool smap = user_page && (regs.cr4 & kCr4Smap) && (regs.cpl == 3 || !(regs.rflags & kRflagsAc));
    allowed = !smap && (!write || writable || !(regs.cr0 & kCr0Wp));
  }
  if (!allowed) return fault(kPfPresent);

  for (size_t i = 0; i < n_used; ++i) set_flags(used[i], kAccessed | (write && i + 1 == n_used ? kDirty : 0));
  return gpa;
}

}  // namespace tern::vmm

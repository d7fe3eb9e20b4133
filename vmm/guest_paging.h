// Guest page-table walks for the emulation fallback (vmm/emulation_fallback.h):
// a linear address to a guest physical one with the rights of one access,
// as the CPU checks them (Intel SDM vol. 3A, chapter 4), over the
// bounds-checked guest RAM view.
//
// Why not KVM_TRANSLATE: it walks as the supervisor and answers
// `writeable = 1` for every page, so a write to a read-only page with
// CR0.WP=1, a user-mode access to a supervisor page, or a supervisor access
// to a user page under SMAP would all complete. An access the walk refuses
// is a #PF for the guest, with the error code and CR2 the CPU would give.
//
// Modes: paging off (linear = physical), 32-bit paging (4 KiB pages and,
// with CR4.PSE, 4 MiB pages with PSE-36 bits), PAE paging (the four PDPTEs
// read at CR3; the CPU's cached copies are not reachable here), 4-level and
// 5-level paging (CR4.LA57), with 2 MiB and 1 GiB pages.
//
// Checked: present, R/W (CR0.WP for the supervisor), U/S (user accesses
// need user pages at every level), SMAP (CR4.SMAP, RFLAGS.AC, implicit
// supervisor accesses), SMEP and NX for fetches (EFER.NXE), and the
// reserved bits that do not depend on MAXPHYADDR (NX without EFER.NXE, PS in
// a PML5E/PML4E, the low bits of large-page addresses, PAE PDPTE bits).
// Not checked: physical-address bits above MAXPHYADDR (not known here) and
// protection keys (PKRU is not reachable): documented in docs/vmm.md.
//
// A successful walk sets the accessed flag in every entry it used and, for
// a write, the dirty flag in the last one (atomically: other vCPUs walk the
// same tables), as the CPU does.
#pragma once

#include <cstdint>
#include <expected>

#include "devices/guest_memory.h"

namespace tern::vmm {

// The registers a walk depends on.
struct PagingRegs {
  uint64_t cr0 = 0;
  uint64_t cr3 = 0;
  uint64_t cr4 = 0;
  uint64_t efer = 0;
  uint64_t rflags = 0;
  unsigned cpl = 0;
};

enum class AccessKind : uint8_t { Read, Write, Fetch };

struct Access {
  AccessKind kind = AccessKind::Read;
  // An access the CPU makes as the supervisor whatever the CPL (the IDT,
  // the GDT): never a user access, always under SMAP (SDM vol. 3A, 4.6).
  bool implicit_supervisor = false;
};

// #PF error code bits (SDM vol. 3A, 4.7).
inline constexpr uint32_t kPfPresent = 1u << 0;
inline constexpr uint32_t kPfWrite = 1u << 1;
inline constexpr uint32_t kPfUser = 1u << 2;
inline constexpr uint32_t kPfReserved = 1u << 3;
inline constexpr uint32_t kPfFetch = 1u << 4;

struct WalkStop {
  enum class Kind : uint8_t {
    PageFault,    // raise #PF(error_code) with CR2 = the linear address
    TableNotRam,  // a paging-structure entry lies outside guest RAM (table_gpa)
  };
  Kind kind;
  uint32_t error_code = 0;
  uint64_t table_gpa = 0;
};

// The guest physical address of `linear` for `access`, or why not.
[[nodiscard]] std::expected<uint64_t, WalkStop> walk_guest_page_tables(const devices::GuestMemory& memory,
                                                                      const PagingRegs& regs, uint64_t linear,
                                                                      Access access);

}  // namespace tern::vmm

// The boot structures tern writes into low guest memory before vCPU 0 runs
// (docs/vmm.md memory map): the e820 map, boot_params (the "zero page" of
// the Linux boot protocol, boot.rst and arch/x86/include/uapi/asm/bootparam.h),
// the command line, a GDT and identity page tables for 64-bit entry.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "arch/x86_64/error.h"
#include "arch/x86_64/kernel_loader.h"

namespace tern::arch::x86_64 {

enum class E820Type : uint32_t { Ram = 1, Reserved = 2 };

struct E820Entry {
  uint64_t addr = 0;
  uint64_t size = 0;
  E820Type type = E820Type::Ram;
  bool operator==(const E820Entry&) const = default;
};

// boot_params offsets (bootparam.h).
inline constexpr size_t kBpAcpiRsdpOff = 0x070;
inline constexpr size_t kBpExtRamdiskImageOff = 0x0c0;
inline constexpr size_t kBpExtRamdiskSizeOff = 0x0c4;
inline constexpr size_t kBpExtCmdLinePtrOff = 0x0c8;
inline constexpr size_t kBpE820EntriesOff = 0x1e8;
inline constexpr size_t kBpE820TableOff = 0x2d0;
inline constexpr size_t kBpE820Max = 128;
inline constexpr size_t kBootParamsSize = 4096;

// The map for a guest with `memory` bytes of RAM: low RAM up to the EBDA,
// the legacy hole [0x9fc00, 1 MiB) (where the ACPI tables live) reserved,
// RAM from 1 MiB to min(memory, 3 GiB), the PCI ECAM reserved (so Linux
// trusts MCFG), and the rest of RAM above 4 GiB.
std::vector<E820Entry> make_e820(uint64_t memory);

struct BootParamsConfig {
  std::string_view cmdline;
  std::optional<uint64_t> initrd_gpa;
  uint64_t initrd_size = 0;
  std::optional<uint64_t> rsdp_gpa;  // boot_params.acpi_rsdp_addr (protocol 2.14)
  std::vector<E820Entry> e820;
};

// Writes boot_params at kBootParamsAddr and the command line at
// kCmdlineAddr into `ram` (guest physical [0, ram.size())).
[[nodiscard]] Result<void> write_boot_params(std::span<uint8_t> ram, const LoadedKernel& kernel,
                                             const BootParamsConfig& config);

// GDT selectors: the boot protocol's __BOOT_CS and __BOOT_DS, and a TSS that
// KVM needs for a valid task register.
inline constexpr uint16_t kBootCsSelector = 0x10;
inline constexpr uint16_t kBootDsSelector = 0x18;
inline constexpr uint16_t kBootTssSelector = 0x20;
inline constexpr size_t kGdtEntries = 5;

// The GDT at kGdtAddr: null, null, 64-bit code, data, TSS.
void write_gdt(std::span<uint8_t> ram);
// Page tables at kPml4Addr identity-mapping [0, 4 GiB) with 2 MiB pages.
void write_identity_page_tables(std::span<uint8_t> ram);
// At the BIOS reset vector (kResetVectorAddr), real-mode code that writes
// the ACPI reset register and halts. tern has no BIOS, and Linux on a
// hardware-reduced ACPI machine reboots through "EFI", then "BIOS"
// (arch/x86/kernel/reboot.c: efi_reboot_required() is true when ACPI is
// hardware-reduced; without EFI, machine_real_restart() jumps to f000:fff0):
// without this, the guest ran zeroed memory there forever instead of
// resetting.
void write_reset_vector(std::span<uint8_t> ram);

// The raw 8-byte GDT descriptor for (flags, base, limit) as in the SDM:
// flags holds the access byte in bits 0..7 and G/DB/L/AVL in bits 12..15.
constexpr uint64_t gdt_entry(uint16_t flags, uint32_t base, uint32_t limit) {
  return ((uint64_t{base} & 0xff000000u) << 32) | ((uint64_t{flags} & 0xf0ffu) << 40) |
         ((uint64_t{limit} & 0x000f0000u) << 32) | ((uint64_t{base} & 0x00ffffffu) << 16) |
         (uint64_t{limit} & 0x0000ffffu);
}
inline constexpr uint64_t kGdtCode64 = gdt_entry(0xa09b, 0, 0xfffff);
inline constexpr uint64_t kGdtData = gdt_entry(0xc093, 0, 0xfffff);
inline constexpr uint64_t kGdtTss = gdt_entry(0x808b, 0, 0xfffff);

}  // namespace tern::arch::x86_64

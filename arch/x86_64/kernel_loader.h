// Loading the guest kernel into RAM: a Linux bzImage through the 64-bit boot
// protocol (Documentation/arch/x86/boot.rst), or an ELF64 executable whose
// PT_LOAD segments go to their physical addresses (docs/vmm.md). The kernel
// image is host input, but it is still bounds-checked everywhere: a bad
// image is an error, never a write outside guest RAM.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "arch/x86_64/error.h"

namespace tern::arch::x86_64 {

enum class KernelKind { BzImage, Elf64 };

struct LoadedKernel {
  KernelKind kind = KernelKind::Elf64;
  // A Linux kernel: every bzImage, and an ELF with a "Linux" ELF note (a
  // vmlinux). Linux-only boot parameters are added only to these.
  bool linux_kernel = false;
  uint64_t entry = 0;      // 64-bit entry point (guest physical, identity-mapped)
  uint64_t end = 0;        // first byte above everything the kernel occupies while booting
  // bzImage only: the setup header (file bytes 0x1f1 .. end of header), which
  // the boot loader copies into boot_params and then fills in.
  std::vector<uint8_t> setup_header;
  uint64_t initrd_addr_max = 0xffffffff;  // highest byte the initramfs may occupy
  uint16_t protocol = 0;                  // boot protocol version (bzImage)
};

// Offsets in the bzImage file and in boot_params (the setup header sits at
// the same offsets in both: boot.rst, "THE REAL-MODE KERNEL HEADER").
inline constexpr size_t kSetupHeaderStart = 0x1f1;
inline constexpr size_t kSetupSectsOff = 0x1f1;
inline constexpr size_t kBootFlagOff = 0x1fe;
inline constexpr size_t kJumpOff = 0x200;          // 2-byte jump; its displacement sizes the header
inline constexpr size_t kHeaderMagicOff = 0x202;   // "HdrS"
inline constexpr size_t kVersionOff = 0x206;
inline constexpr size_t kTypeOfLoaderOff = 0x210;
inline constexpr size_t kLoadflagsOff = 0x211;
inline constexpr size_t kRamdiskImageOff = 0x218;
inline constexpr size_t kRamdiskSizeOff = 0x21c;
inline constexpr size_t kHeapEndPtrOff = 0x224;
inline constexpr size_t kCmdLinePtrOff = 0x228;
inline constexpr size_t kInitrdAddrMaxOff = 0x22c;
inline constexpr size_t kKernelAlignmentOff = 0x230;
inline constexpr size_t kRelocatableOff = 0x234;
inline constexpr size_t kXloadflagsOff = 0x236;
inline constexpr size_t kCmdlineSizeOff = 0x238;
inline constexpr size_t kPrefAddressOff = 0x258;
inline constexpr size_t kInitSizeOff = 0x260;

inline constexpr uint8_t kLoadedHigh = 0x01;     // loadflags: protected-mode code at 1 MiB
inline constexpr uint8_t kCanUseHeap = 0x80;
inline constexpr uint16_t kXlfKernel64 = 0x01;   // xloadflags: has the 64-bit entry at +0x200
// 2.12 is the first protocol with xloadflags, which is how a kernel says it
// has a 64-bit entry point; every x86-64 kernel since 3.8 has it.
inline constexpr uint16_t kMinProtocol = 0x020c;

// Loads `image` (bzImage or ELF64, detected by magic) into `ram`, the host
// view of guest physical [0, ram.size()).
[[nodiscard]] Result<LoadedKernel> load_kernel(std::span<const uint8_t> image,
                                               std::span<uint8_t> ram);

// Places the initramfs as high as the kernel allows (below initrd_addr_max
// and the top of `ram`), page-aligned and above the kernel. Returns its gpa.
[[nodiscard]] Result<uint64_t> load_initramfs(std::span<const uint8_t> initrd,
                                              const LoadedKernel& kernel,
                                              std::span<uint8_t> ram);

}  // namespace tern::arch::x86_64

#include "arch/x86_64/boot_setup.h"

#include <algorithm>
#include <array>
#include <string>
#include <cstdlib>
#include <cstring>

#include "arch/x86_64/layout.h"

namespace tern::arch::x86_64 {

namespace {

// Boot structures live at fixed low addresses that the VMM guarantees are
// RAM (it refuses guests smaller than that); a miss is a broken invariant.
template <class T>
void put(std::span<uint8_t> ram, uint64_t gpa, const T& v) {
  if (gpa > ram.size() || sizeof(T) > ram.size() - gpa) std::abort();
  std::memcpy(ram.data() + gpa, &v, sizeof v);
}

}  // namespace

std::vector<E820Entry> make_e820(uint64_t memory) {
  std::vector<E820Entry> map;
  uint64_t low = low_ram_size(memory);
  map.push_back({0, kEbdaStart, E820Type::Ram});
  map.push_back({kEbdaStart, kKernelLoadAddr - kEbdaStart, E820Type::Reserved});
  if (low > kKernelLoadAddr) map.push_back({kKernelLoadAddr, low - kKernelLoadAddr, E820Type::Ram});
  map.push_back({kPciEcamStart, kPciEcamSize, E820Type::Reserved});
  if (uint64_t high = high_ram_size(memory)) map.push_back({kHighRamStart, high, E820Type::Ram});
  return map;
}

Result<void> write_boot_params(std::span<uint8_t> ram, const LoadedKernel& kernel,
                               const BootParamsConfig& config) {
  if (config.cmdline.size() + 1 > kCmdlineMax) return fail(Errc::DoesNotFit, "command line too long");
  if (kernel.kind == KernelKind::BzImage && kernel.setup_header.size() >= kCmdlineSizeOff + 4 - kSetupHeaderStart) {
    uint32_t limit;
    std::memcpy(&limit, kernel.setup_header.data() + (kCmdlineSizeOff - kSetupHeaderStart), 4);
    if (config.cmdline.size() > limit) {
      return fail(Errc::DoesNotFit, "command line longer than the kernel's cmdline_size (" +
                                        std::to_string(limit) + ")");
    }
  }
  if (config.e820.size() > kBpE820Max) return fail(Errc::TooManyE820Entries, std::to_string(config.e820.size()));

  std::array<uint8_t, kBootParamsSize> bp{};
  auto set = [&](size_t off, const auto& v) { std::memcpy(bp.data() + off, &v, sizeof v); };
  if (kernel.kind == KernelKind::BzImage) {
    std::copy(kernel.setup_header.begin(), kernel.setup_header.end(), bp.begin() + kSetupHeaderStart);
    // boot.rst: a boot loader without an assigned id writes 0xff.
    set(kTypeOfLoaderOff, uint8_t{0xff});
    bp[kLoadflagsOff] |= kCanUseHeap;
    set(kHeapEndPtrOff, uint16_t{0xfe00 - 0x200});
  } else {
    // An ELF kernel has no setup header; a Linux vmlinux entered at its
    // 64-bit entry still reads one (the initrd is only used when
    // type_of_loader is non-zero), so write what a boot loader would.
    set(kBootFlagOff, uint16_t{0xaa55});
    std::memcpy(bp.data() + kHeaderMagicOff, "HdrS", 4);
    set(kVersionOff, uint16_t{0x020f});
    set(kTypeOfLoaderOff, uint8_t{0xff});
    set(kKernelAlignmentOff, uint32_t{0x1000000});
    set(kCmdlineSizeOff, static_cast<uint32_t>(kCmdlineMax - 1));
  }
  set(kCmdLinePtrOff, static_cast<uint32_t>(kCmdlineAddr));
  set(kBpExtCmdLinePtrOff, uint32_t{0});
  if (config.initrd_gpa) {
    set(kRamdiskImageOff, static_cast<uint32_t>(*config.initrd_gpa));
    set(kRamdiskSizeOff, static_cast<uint32_t>(config.initrd_size));
    set(kBpExtRamdiskImageOff, static_cast<uint32_t>(*config.initrd_gpa >> 32));
    set(kBpExtRamdiskSizeOff, static_cast<uint32_t>(config.initrd_size >> 32));
  }
  if (config.rsdp_gpa) set(kBpAcpiRsdpOff, *config.rsdp_gpa);
  set(kBpE820EntriesOff, static_cast<uint8_t>(config.e820.size()));
  for (size_t i = 0; i < config.e820.size(); ++i) {
    // struct boot_e820_entry { u64 addr; u64 size; u32 type; } __packed
    size_t off = kBpE820TableOff + i * 20;
    set(off, config.e820[i].addr);
    set(off + 8, config.e820[i].size);
    set(off + 16, static_cast<uint32_t>(config.e820[i].type));
  }
  put(ram, kBootParamsAddr, bp);

  if (kCmdlineAddr + kCmdlineMax > ram.size()) std::abort();
  std::memset(ram.data() + kCmdlineAddr, 0, kCmdlineMax);
  std::memcpy(ram.data() + kCmdlineAddr, config.cmdline.data(), config.cmdline.size());
  return {};
}

void write_gdt(std::span<uint8_t> ram) {
  const uint64_t gdt[kGdtEntries] = {0, 0, kGdtCode64, kGdtData, kGdtTss};
  put(ram, kGdtAddr, gdt);
}

void write_reset_vector(std::span<uint8_t> ram) {
  static_assert(kAcpiResetPort <= 0xffff);
  const uint8_t code[] = {
      0xb0, 0x01,  // mov al, 1 (the FADT's reset value)
      0xba, static_cast<uint8_t>(kAcpiResetPort & 0xff), static_cast<uint8_t>(kAcpiResetPort >> 8),  // mov dx, port
      0xee,        // out dx, al
      0xf4,        // hlt
      0xeb, 0xfd,  // jmp to the hlt
  };
  put(ram, kResetVectorAddr, code);
}

void write_identity_page_tables(std::span<uint8_t> ram) {
  constexpr uint64_t kPresentWritable = 0x3, kHuge = 0x80;
  put(ram, kPml4Addr, kPdptAddr | kPresentWritable);
  for (uint64_t i = 1; i < 512; ++i) put(ram, kPml4Addr + 8 * i, uint64_t{0});
  for (uint64_t g = 0; g < 512; ++g) {
    put(ram, kPdptAddr + 8 * g, g < 4 ? (kPdAddr + 0x1000 * g) | kPresentWritable : uint64_t{0});
  }
  for (uint64_t g = 0; g < 4; ++g) {
    for (uint64_t j = 0; j < 512; ++j) {
      put(ram, kPdAddr + 0x1000 * g + 8 * j, ((g * 512 + j) << 21) | kPresentWritable | kHuge);
    }
  }
}

}  // namespace tern::arch::x86_64

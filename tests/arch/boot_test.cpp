// The x86-64 boot code without KVM: kernel loaders (crafted bzImage setup
// headers, ELF64 bounds), boot_params, the e820 map, page tables, the GDT,
// CPUID filtering and the boot register state.
#include <elf.h>
#include <gtest/gtest.h>

#include <array>
#include <cstring>
#include <vector>

#include "arch/x86_64/boot_setup.h"
#include "arch/x86_64/cpu_setup.h"
#include "arch/x86_64/kernel_loader.h"
#include "arch/x86_64/layout.h"

namespace tern::arch::x86_64 {
namespace {

template <class T>
void put(std::vector<uint8_t>& b, size_t off, T v) {
  std::memcpy(b.data() + off, &v, sizeof v);
}
template <class T>
T get(const std::vector<uint8_t>& b, size_t off) {
  T v;
  std::memcpy(&v, b.data() + off, sizeof v);
  return v;
}

// A bzImage as the boot protocol describes it: 4 setup sectors after the
// boot sector, then `pm_size` bytes of protected-mode code.
std::vector<uint8_t> bzimage(uint16_t version = 0x020f, size_t pm_size = 8192) {
  std::vector<uint8_t> b(5 * 512 + pm_size);
  b[kSetupSectsOff] = 4;
  put<uint16_t>(b, kBootFlagOff, 0xaa55);
  b[0x200] = 0xeb;
  b[0x201] = 0x6a;  // header ends at 0x26c
  std::memcpy(b.data() + kHeaderMagicOff, "HdrS", 4);
  put<uint16_t>(b, kVersionOff, version);
  b[kLoadflagsOff] = kLoadedHigh;
  put<uint32_t>(b, kInitrdAddrMaxOff, 0x7fffffff);
  put<uint32_t>(b, kKernelAlignmentOff, 0x200000);
  b[kRelocatableOff] = 1;
  put<uint16_t>(b, kXloadflagsOff, kXlfKernel64);
  put<uint32_t>(b, kCmdlineSizeOff, 2047);
  put<uint64_t>(b, kPrefAddressOff, 0x1000000);
  put<uint32_t>(b, kInitSizeOff, 0x100000);
  for (size_t i = 0; i < pm_size; ++i) b[5 * 512 + i] = static_cast<uint8_t>(i * 7);
  return b;
}

TEST(BzImage, LoadsProtectedModeKernelAtOneMiB) {
  std::vector<uint8_t> ram(64 << 20);
  auto img = bzimage();
  auto k = load_kernel(img, ram);
  ASSERT_TRUE(k.has_value()) << k.error().message();
  EXPECT_EQ(k->kind, KernelKind::BzImage);
  EXPECT_EQ(k->entry, 0x100000u + 0x200);
  EXPECT_EQ(k->end, 0x100000u + 0x100000);  // init_size is larger than the code
  EXPECT_EQ(k->protocol, 0x020f);
  EXPECT_EQ(k->initrd_addr_max, 0x7fffffffu);
  EXPECT_EQ(0, std::memcmp(ram.data() + 0x100000, img.data() + 5 * 512, 8192));
  ASSERT_EQ(k->setup_header.size(), 0x26cu - 0x1f1);
}

TEST(BzImage, ZeroSetupSectsMeansFour) {
  std::vector<uint8_t> ram(64 << 20);
  auto img = bzimage();
  img[kSetupSectsOff] = 0;
  ASSERT_TRUE(load_kernel(img, ram).has_value());
  EXPECT_EQ(0, std::memcmp(ram.data() + 0x100000, img.data() + 5 * 512, 8192));
}

TEST(BzImage, RefusesBadHeaders) {
  std::vector<uint8_t> ram(64 << 20);
  auto expect = [&](std::vector<uint8_t> img, Errc code) {
    auto k = load_kernel(img, ram);
    ASSERT_FALSE(k.has_value());
    EXPECT_EQ(k.error().code, code) << k.error().message();
  };
  auto old = bzimage(0x020b);
  expect(old, Errc::UnsupportedProtocol);
  auto no64 = bzimage();
  put<uint16_t>(no64, kXloadflagsOff, 0);
  expect(no64, Errc::UnsupportedProtocol);
  auto zimage = bzimage();
  zimage[kLoadflagsOff] = 0;
  expect(zimage, Errc::BadBzImage);
  auto flag = bzimage();
  put<uint16_t>(flag, kBootFlagOff, 0);
  expect(flag, Errc::BadBzImage);
  auto long_header = bzimage();
  long_header[0x201] = 0x00;  // header would end before its own fields
  expect(long_header, Errc::BadBzImage);
  auto truncated = bzimage();
  truncated.resize(5 * 512);  // no protected-mode code
  expect(truncated, Errc::BadBzImage);
  auto huge = bzimage();
  put<uint32_t>(huge, kInitSizeOff, 0x7fffffff);  // needs more than RAM
  expect(huge, Errc::DoesNotFit);
  std::vector<uint8_t> junk(4096, 0x90);
  expect(junk, Errc::UnknownKernelFormat);
}

TEST(BzImage, InitramfsGoesHighBelowTheLimit) {
  std::vector<uint8_t> ram(64 << 20);
  auto img = bzimage();
  auto k = load_kernel(img, ram);
  ASSERT_TRUE(k.has_value());
  std::vector<uint8_t> initrd(10000, 0xab);
  auto gpa = load_initramfs(initrd, *k, ram);
  ASSERT_TRUE(gpa.has_value());
  EXPECT_EQ(*gpa % 4096, 0u);
  EXPECT_LE(*gpa + initrd.size(), ram.size());
  EXPECT_GT(*gpa + initrd.size() + 4096, ram.size());
  EXPECT_EQ(ram[*gpa], 0xab);

  k->initrd_addr_max = 0x3fffff;  // 4 MiB limit
  gpa = load_initramfs(initrd, *k, ram);
  ASSERT_TRUE(gpa.has_value());
  EXPECT_LE(*gpa + initrd.size(), 0x400000u);

  std::vector<uint8_t> big(63 << 20);  // cannot fit above the kernel
  EXPECT_FALSE(load_initramfs(big, *k, ram).has_value());
}

// An ELF64 executable with the given PT_LOAD segments (paddr, filesz, memsz).
struct Seg {
  uint64_t paddr, filesz, memsz;
};
std::vector<uint8_t> elf(std::vector<Seg> segs, uint64_t entry) {
  size_t data = sizeof(Elf64_Ehdr) + segs.size() * sizeof(Elf64_Phdr);
  size_t total = data;
  for (auto& s : segs) total += s.filesz;
  std::vector<uint8_t> b(total);
  Elf64_Ehdr eh{};
  std::memcpy(eh.e_ident, ELFMAG, SELFMAG);
  eh.e_ident[EI_CLASS] = ELFCLASS64;
  eh.e_ident[EI_DATA] = ELFDATA2LSB;
  eh.e_type = ET_EXEC;
  eh.e_machine = EM_X86_64;
  eh.e_entry = entry;
  eh.e_phoff = sizeof eh;
  eh.e_phentsize = sizeof(Elf64_Phdr);
  eh.e_phnum = static_cast<uint16_t>(segs.size());
  put(b, 0, eh);
  size_t off = data;
  for (size_t i = 0; i < segs.size(); ++i) {
    Elf64_Phdr ph{};
    ph.p_type = PT_LOAD;
    ph.p_offset = off;
    ph.p_paddr = segs[i].paddr;
    ph.p_vaddr = segs[i].paddr;
    ph.p_filesz = segs[i].filesz;
    ph.p_memsz = segs[i].memsz;
    put(b, sizeof eh + i * sizeof ph, ph);
    std::memset(b.data() + off, 0x11 * static_cast<int>(i + 1), segs[i].filesz);
    off += segs[i].filesz;
  }
  return b;
}

TEST(Elf, LoadsSegmentsToPaddrAndZeroesBss) {
  std::vector<uint8_t> ram(16 << 20, 0xee);
  auto img = elf({{0x100000, 100, 100}, {0x200000, 10, 4096}}, 0x100010);
  auto k = load_kernel(img, ram);
  ASSERT_TRUE(k.has_value()) << k.error().message();
  EXPECT_EQ(k->kind, KernelKind::Elf64);
  EXPECT_EQ(k->entry, 0x100010u);
  EXPECT_EQ(k->end, 0x201000u);
  EXPECT_EQ(ram[0x100000], 0x11);
  EXPECT_EQ(ram[0x200000 + 9], 0x22);
  EXPECT_EQ(ram[0x200000 + 10], 0);  // bss
  EXPECT_EQ(ram[0x200000 + 4095], 0);
  EXPECT_EQ(ram[0x200000 + 4096], 0xee);
}

// A vmlinux says it is Linux with a "Linux"-owned ELF note; other ELF
// kernels (the test guests) get no Linux-only boot parameters.
TEST(Elf, LinuxNoteMarksALinuxKernel) {
  std::vector<uint8_t> ram(16 << 20);
  auto with_note = [&](const char* owner, uint32_t namesz) {
    auto img = elf({{0x100000, 64, 64}, {0x200000, 64, 64}}, 0x100000);
    const size_t ph1 = sizeof(Elf64_Ehdr) + sizeof(Elf64_Phdr);
    put<uint32_t>(img, ph1 + offsetof(Elf64_Phdr, p_type), PT_NOTE);
    size_t off = sizeof(Elf64_Ehdr) + 2 * sizeof(Elf64_Phdr) + 64;  // the second segment's data
    std::memset(img.data() + off, 0, 64);
    Elf64_Nhdr other{4, 4, 3};  // a "GNU" build-id note first
    put(img, off, other);
    std::memcpy(img.data() + off + sizeof other, "GNU", 4);
    off += sizeof other + 8;
    Elf64_Nhdr nh{namesz, 4, 0x100};
    put(img, off, nh);
    std::memcpy(img.data() + off + sizeof nh, owner, std::strlen(owner) + 1);
    return load_kernel(img, ram);
  };
  auto k = with_note("Linux", 6);
  ASSERT_TRUE(k.has_value()) << k.error().message();
  EXPECT_TRUE(k->linux_kernel);
  k = with_note("Xen", 4);
  ASSERT_TRUE(k.has_value());
  EXPECT_FALSE(k->linux_kernel);
  k = with_note("Linux", 0x7fffffff);  // a name running past the segment: ignored, not read
  ASSERT_TRUE(k.has_value());
  EXPECT_FALSE(k->linux_kernel);
  k = load_kernel(elf({{0x100000, 64, 64}}, 0x100000), ram);
  ASSERT_TRUE(k.has_value());
  EXPECT_FALSE(k->linux_kernel);
}

TEST(Elf, RefusesSegmentsOutsideRamOrFile) {
  std::vector<uint8_t> ram(16 << 20);
  auto code = [&](std::vector<uint8_t> img) {
    auto k = load_kernel(img, ram);
    EXPECT_FALSE(k.has_value());
    return k ? Errc::BadElf : k.error().code;
  };
  EXPECT_EQ(code(elf({{0xfff000, 100, 0x2000}}, 0xfff000)), Errc::DoesNotFit);   // past RAM
  EXPECT_EQ(code(elf({{~0ull - 10, 1, 100}}, 0x100000)), Errc::DoesNotFit);      // wraps
  EXPECT_EQ(code(elf({{0x1000, 16, 16}}, 0x1000)), Errc::DoesNotFit);             // boot structures
  EXPECT_EQ(code(elf({{0x100000, 16, 16}}, 0x500000)), Errc::BadElf);             // entry not loaded
  EXPECT_EQ(code(elf({{0x100000, 32, 16}}, 0x100000)), Errc::BadElf);             // filesz > memsz
  auto img = elf({{0x100000, 64, 64}}, 0x100000);
  auto ph_off = sizeof(Elf64_Ehdr);
  put<uint64_t>(img, ph_off + offsetof(Elf64_Phdr, p_offset), 1ull << 40);  // data outside the file
  EXPECT_EQ(code(img), Errc::BadElf);
  img = elf({{0x100000, 64, 64}}, 0x100000);
  put<uint16_t>(img, offsetof(Elf64_Ehdr, e_phnum), 5000);  // headers outside the file
  EXPECT_EQ(code(img), Errc::BadElf);
  img = elf({{0x100000, 64, 64}}, 0x100000);
  img[EI_CLASS] = ELFCLASS32;
  EXPECT_EQ(code(img), Errc::BadElf);
}

TEST(E820, MatchesTheMemoryMap) {
  auto small = make_e820(512ull << 20);
  std::vector<E820Entry> want{{0, 0x9fc00, E820Type::Ram},
                              {0x9fc00, 0x100000 - 0x9fc00, E820Type::Reserved},
                              {0x100000, (512ull << 20) - 0x100000, E820Type::Ram},
                              {kPciEcamStart, kPciEcamSize, E820Type::Reserved}};
  EXPECT_EQ(small, want);
  auto big = make_e820(5ull << 30);
  ASSERT_EQ(big.size(), 5u);
  EXPECT_EQ(big[2].size, (3ull << 30) - 0x100000);
  EXPECT_EQ(big[4], (E820Entry{4ull << 30, 2ull << 30, E820Type::Ram}));
}

TEST(BootParams, CarriesHeaderCmdlineInitrdE820AndRsdp) {
  std::vector<uint8_t> ram(64 << 20);
  auto img = bzimage();
  auto k = load_kernel(img, ram);
  ASSERT_TRUE(k.has_value());
  BootParamsConfig c;
  c.cmdline = "console=ttyS0 marker";
  c.initrd_gpa = 0x3000000;
  c.initrd_size = 12345;
  c.rsdp_gpa = 0xe0000;
  c.e820 = make_e820(64 << 20);
  ASSERT_TRUE(write_boot_params(ram, *k, c).has_value());
  const size_t bp = kBootParamsAddr;
  EXPECT_EQ(std::memcmp(ram.data() + bp + kHeaderMagicOff, "HdrS", 4), 0);
  EXPECT_EQ(ram[bp + kTypeOfLoaderOff], 0xff);
  EXPECT_EQ(get<uint32_t>(ram, bp + kCmdLinePtrOff), kCmdlineAddr);
  EXPECT_STREQ(reinterpret_cast<const char*>(ram.data() + kCmdlineAddr), "console=ttyS0 marker");
  EXPECT_EQ(get<uint32_t>(ram, bp + kRamdiskImageOff), 0x3000000u);
  EXPECT_EQ(get<uint32_t>(ram, bp + kRamdiskSizeOff), 12345u);
  EXPECT_EQ(get<uint64_t>(ram, bp + kBpAcpiRsdpOff), 0xe0000u);
  ASSERT_EQ(ram[bp + kBpE820EntriesOff], 4);
  EXPECT_EQ(get<uint64_t>(ram, bp + kBpE820TableOff + 2 * 20), 0x100000u);
  EXPECT_EQ(get<uint64_t>(ram, bp + kBpE820TableOff + 2 * 20 + 8), (64u << 20) - 0x100000);
  EXPECT_EQ(get<uint32_t>(ram, bp + kBpE820TableOff + 2 * 20 + 16), 1u);
  EXPECT_EQ(get<uint32_t>(ram, bp + kBpE820TableOff + 1 * 20 + 16), 2u);

  c.cmdline = std::string(3000, 'x');  // longer than cmdline_size 2047
  std::string longer(3000, 'x');
  c.cmdline = longer;
  EXPECT_FALSE(write_boot_params(ram, *k, c).has_value());
}

TEST(PageTables, IdentityMapFourGiBWithTwoMiBPages) {
  std::vector<uint8_t> ram(16 << 20);
  write_identity_page_tables(ram);
  // Walk a few addresses: RAM, the ECAM, the LAPIC.
  for (uint64_t va : {uint64_t{0}, uint64_t{0x100000}, uint64_t{0x7fe00000}, kPciEcamStart, kLapicAddr}) {
    uint64_t pml4e = get<uint64_t>(ram, kPml4Addr + 8 * ((va >> 39) & 511));
    ASSERT_TRUE(pml4e & 1);
    uint64_t pdpte = get<uint64_t>(ram, (pml4e & ~0xfffull) + 8 * ((va >> 30) & 511));
    ASSERT_TRUE(pdpte & 1);
    uint64_t pde = get<uint64_t>(ram, (pdpte & ~0xfffull) + 8 * ((va >> 21) & 511));
    ASSERT_TRUE(pde & 0x80) << "2 MiB page";
    EXPECT_EQ((pde & ~0x1fffffull) | (va & 0x1fffff), va);
  }
  EXPECT_EQ(get<uint64_t>(ram, kPdptAddr + 8 * 4), 0u);  // nothing above 4 GiB
}

// Linux reboots a hardware-reduced ACPI machine without EFI through a
// real-mode jump to f000:fff0; there the ACPI reset register must be hit.
TEST(ResetVector, RealModeCodeWritesTheAcpiResetRegister) {
  std::vector<uint8_t> ram(1 << 20);
  write_reset_vector(ram);
  const uint8_t expected[] = {0xb0, 0x01, 0xba, kAcpiResetPort & 0xff, kAcpiResetPort >> 8, 0xee, 0xf4, 0xeb, 0xfd};
  ASSERT_LE(kResetVectorAddr + sizeof expected, ram.size());
  EXPECT_EQ(0, std::memcmp(ram.data() + kResetVectorAddr, expected, sizeof expected));
  EXPECT_EQ(kResetVectorAddr, 0xf0000u + 0xfff0u);
}

TEST(Gdt, BootSelectorsAreFlat64BitCodeAndData) {
  std::vector<uint8_t> ram(1 << 20);
  write_gdt(ram);
  EXPECT_EQ(get<uint64_t>(ram, kGdtAddr + kBootCsSelector), 0x00af9b000000ffffull);
  EXPECT_EQ(get<uint64_t>(ram, kGdtAddr + kBootDsSelector), 0x00cf93000000ffffull);
  kvm_sregs s{};
  setup_long_mode_sregs(s);
  EXPECT_EQ(s.cs.selector, kBootCsSelector);
  EXPECT_EQ(s.cs.l, 1);
  EXPECT_EQ(s.ds.selector, kBootDsSelector);
  EXPECT_EQ(s.cr3, kPml4Addr);
  EXPECT_EQ(s.efer & 0x500, 0x500u);
  EXPECT_EQ(s.cr0 & 0x80000001u, 0x80000001u);
  kvm_regs r = boot_regs(0x100200);
  EXPECT_EQ(r.rip, 0x100200u);
  EXPECT_EQ(r.rsi, kBootParamsAddr);
  EXPECT_EQ(r.rflags & 0x200, 0u);  // interrupts off
}

kvm_cpuid_entry2 leaf(uint32_t fn, uint32_t index = 0) {
  kvm_cpuid_entry2 e{};
  e.function = fn;
  e.index = index;
  return e;
}

TEST(Cpuid, PerVcpuApicIdsAndTopology) {
  std::vector<kvm_cpuid_entry2> base{leaf(1), leaf(4, 0), leaf(4, 3), leaf(0xb, 0), leaf(0xb, 1), leaf(0xb, 2)};
  base[0].ebx = 0x00000800;  // clflush size
  base[2].eax = 3 << 5;      // L3
  for (uint32_t i = 0; i < 3; ++i) {
    auto e = base;
    filter_cpuid(e, i, 3);
    EXPECT_EQ(e[0].ebx >> 24, i);
    EXPECT_EQ((e[0].ebx >> 16) & 0xff, 3u);
    EXPECT_EQ(e[0].ebx & 0xffff, 0x0800u);
    EXPECT_TRUE(e[0].ecx & (1u << 31)) << "hypervisor bit";
    EXPECT_TRUE(e[0].edx & (1u << 28)) << "HTT";
    EXPECT_EQ(e[1].eax >> 26, 2u);              // cores per package - 1
    EXPECT_EQ((e[2].eax >> 14) & 0xfff, 2u);    // L3 shared by all
    EXPECT_EQ(e[3].edx, i);
    EXPECT_EQ(e[4].edx, i);
    EXPECT_EQ(e[3].ebx, 1u);
    EXPECT_EQ((e[3].ecx >> 8) & 0xff, 1u);  // SMT level
    EXPECT_EQ(e[4].ebx, 3u);
    EXPECT_EQ(e[4].eax, 2u);                // 2 bits of core id
    EXPECT_EQ((e[4].ecx >> 8) & 0xff, 2u);  // core level
    EXPECT_EQ((e[5].ecx >> 8) & 0xff, 0u);  // end of the list
    // KVM signature added when KVM did not report it.
    ASSERT_EQ(e.back().function, 0x40000000u);
    char sig[13] = {};
    std::memcpy(sig, &e.back().ebx, 4);
    std::memcpy(sig + 4, &e.back().ecx, 4);
    std::memcpy(sig + 8, &e.back().edx, 4);
    EXPECT_STREQ(sig, "KVMKVMKVM");
  }
}

TEST(Cpuid, BrandStringFillsTheThreeLeavesAndTheirMaximum) {
  std::vector<kvm_cpuid_entry2> e(2);
  e[0].function = 0x80000000;
  e[0].eax = 0x80000001;
  e[1].function = 0x80000003;  // present, zeroed (as KVM reports it)
  std::array<uint8_t, 48> brand{};
  const char text[] = "QEMU TCG CPU version 2.5+";
  std::memcpy(brand.data(), text, sizeof text);
  set_brand_string(e, brand);
  ASSERT_EQ(e.size(), 4u);
  EXPECT_EQ(e[0].eax, 0x80000004u);
  std::array<uint8_t, 48> seen{};
  for (const auto& x : e) {
    if (x.function < 0x80000002 || x.function > 0x80000004) continue;
    uint8_t* p = seen.data() + 16 * (x.function - 0x80000002);
    std::memcpy(p, &x.eax, 4);
    std::memcpy(p + 4, &x.ebx, 4);
    std::memcpy(p + 8, &x.ecx, 4);
    std::memcpy(p + 12, &x.edx, 4);
  }
  EXPECT_EQ(seen, brand);
}

TEST(Cpuid, EmulatedHostProfileHidesWhatTheEmulatorCannotRun) {
  // This host's KVM-supported leaves, abridged (kvm_pvm on an AMD Zen 4).
  std::vector<kvm_cpuid_entry2> e{leaf(1), leaf(7, 0), leaf(7, 1), leaf(0xd, 0), leaf(0xd, 1), leaf(0x80000001)};
  e[0].ecx = 0xf6f83203;  // sse3 pclmulqdq ssse3 fma cx16 pcid sse4.1/4.2 x2apic movbe popcnt tsc-deadline aes xsave avx f16c rdrand hypervisor
  e[0].edx = 0x178bfbff;
  e[1].ebx = 0xf1bf07ab;  // fsgsbase ... bmi1 avx2 smep bmi2 erms invpcid avx512* rdseed adx smap clflushopt clwb sha
  e[1].ecx = 0x00405f5a;
  e[2].eax = 1u << 5;     // avx512_bf16
  e[5].ecx = 0x75c237ff;
  e[5].edx = 0x2fd3fbff;
  auto orig = e;
  size_t cleared = hide_unemulated_features(e);
  EXPECT_GT(cleared, 20u);
  ASSERT_EQ(e.size(), 4u) << "leaf 0xd removed";
  const uint32_t sse3 = 1u << 0, pcid = 1u << 17, x2apic = 1u << 21, tsc_deadline = 1u << 24, hv = 1u << 31;
  EXPECT_EQ(e[0].ecx, orig[0].ecx & (sse3 | pcid | x2apic | tsc_deadline | hv));
  EXPECT_EQ(e[0].edx, orig[0].edx) << "SSE2 and below stay";
  const uint32_t fsgsbase = 1u << 0, smep = 1u << 7, erms = 1u << 9, invpcid = 1u << 10, smap = 1u << 20;
  EXPECT_EQ(e[1].ebx & (fsgsbase | smep | erms | invpcid | smap), fsgsbase | smep | erms | invpcid | smap);
  for (unsigned b : {3u, 5u, 8u, 16u, 17u, 18u, 19u, 29u, 30u, 31u}) EXPECT_FALSE(e[1].ebx & (1u << b)) << b;
  for (unsigned b : {1u, 6u, 8u, 9u, 10u, 11u, 12u, 14u}) EXPECT_FALSE(e[1].ecx & (1u << b)) << b;
  EXPECT_EQ(e[2].eax, 0u);
  for (unsigned b : {5u, 6u, 7u, 11u, 16u, 21u}) EXPECT_FALSE(e[3].ecx & (1u << b)) << b;
  EXPECT_EQ(e[3].edx, orig[5].edx);
  EXPECT_EQ(hide_unemulated_features(e), 0u) << "idempotent";
}

// The lab's L1 (QEMU TCG -cpu max,xsave=off) offered AVX, AVX2, FMA, F16C
// and VAES without XSAVE; Debian's aesni_intel then ran vmovdqa in a guest
// that had never enabled AVX state and took #UD ("invalid opcode" in
// aes_ctr_enc_128_avx_by8).
TEST(Cpuid, FeaturesWithoutTheirPrerequisitesAreDropped) {
  std::vector<kvm_cpuid_entry2> e{leaf(1), leaf(7, 0), leaf(7, 1), leaf(0xd, 0), leaf(0xd, 1), leaf(0x80000001)};
  const uint32_t sse3 = 1u << 0, fma = 1u << 12, xsave = 1u << 26, osxsave = 1u << 27, avx = 1u << 28,
                 f16c = 1u << 29, aes = 1u << 25;
  const uint32_t avx2 = 1u << 5, avx512f = 1u << 16, avx512bw = 1u << 30, bmi2 = 1u << 8;
  const uint32_t vaes = 1u << 9, vpclmulqdq = 1u << 10, gfni = 1u << 8, pku = 1u << 3;
  e[0].ecx = sse3 | fma | aes | avx | f16c;  // no XSAVE
  e[1].ebx = avx2 | bmi2 | avx512f | avx512bw;
  e[1].ecx = vaes | vpclmulqdq | gfni | pku;
  e[2].eax = 1u << 4;  // AVX-VNNI
  e[5].ecx = 1u << 11 | 1u << 16 | 1u << 5;  // XOP FMA4 LZCNT
  size_t cleared = drop_features_without_prerequisites(e);
  EXPECT_EQ(cleared, 12u);
  ASSERT_EQ(e.size(), 4u) << "leaf 0xd removed";
  EXPECT_EQ(e[0].ecx, sse3 | aes);
  EXPECT_EQ(e[1].ebx, bmi2);
  EXPECT_EQ(e[1].ecx, gfni);
  EXPECT_EQ(e[2].eax, 0u);
  EXPECT_EQ(e[3].ecx, 1u << 5);
  EXPECT_EQ(drop_features_without_prerequisites(e), 0u) << "idempotent";

  // A consistent CPU loses nothing; AVX-512 subsets need AVX-512F.
  std::vector<kvm_cpuid_entry2> ok{leaf(1), leaf(7, 0), leaf(0xd, 0)};
  ok[0].ecx = sse3 | fma | xsave | osxsave | avx | f16c;
  ok[1].ebx = avx2 | avx512bw;
  ok[1].ecx = vaes | pku;
  EXPECT_EQ(drop_features_without_prerequisites(ok), 1u);
  EXPECT_EQ(ok.size(), 3u);
  EXPECT_EQ(ok[1].ebx, avx2) << "AVX-512BW without AVX-512F";
  EXPECT_EQ(ok[1].ecx, vaes | pku);
}

TEST(Lapic, Lint0ExtIntLint1Nmi) {
  kvm_lapic_state l{};
  uint32_t masked = 0x10000;
  std::memcpy(l.regs + 0x350, &masked, 4);
  setup_lapic_lvt(l);
  uint32_t lint0, lint1;
  std::memcpy(&lint0, l.regs + 0x350, 4);
  std::memcpy(&lint1, l.regs + 0x360, 4);
  EXPECT_EQ(lint0 & 0x700, 0x700u);
  EXPECT_EQ(lint1 & 0x700, 0x400u);
}

}  // namespace
}  // namespace tern::arch::x86_64

#include "arch/x86_64/cpu_setup.h"

#include <cpuid.h>

#include <bit>
#include <algorithm>
#include <cstring>
#include <initializer_list>

#include "arch/x86_64/boot_setup.h"
#include "arch/x86_64/layout.h"

namespace tern::arch::x86_64 {

namespace {

constexpr uint32_t kLeaf1EcxHypervisor = 1u << 31;
constexpr uint32_t kLeaf1EdxHtt = 1u << 28;
constexpr uint32_t kKvmSignatureLeaf = 0x40000000;
constexpr uint32_t kKvmFeaturesLeaf = 0x40000001;

// Bits needed to number `count` items (x2APIC ID shift for the core level).
uint32_t id_bits(uint32_t count) { return count <= 1 ? 0 : std::bit_width(count - 1); }

// Leaf 0xB / 0x1F subleaf `sub` (SDM vol. 2A, CPUID "Extended Topology"):
// level 0 = SMT (one thread per core), level 1 = core (count cores),
// then the invalid level that ends the enumeration.
void topology_subleaf(kvm_cpuid_entry2& e, uint32_t index, uint32_t count) {
  uint32_t sub = e.index;
  e.edx = index;
  if (sub == 0) {
    e.eax = 0;
    e.ebx = 1;
    e.ecx = (1u << 8) | sub;  // type 1: SMT
  } else if (sub == 1) {
    e.eax = id_bits(count);
    e.ebx = count;
    e.ecx = (2u << 8) | sub;  // type 2: core
  } else {
    e.eax = e.ebx = 0;
    e.ecx = sub;  // type 0: invalid
  }
}

}  // namespace

void filter_cpuid(std::vector<kvm_cpuid_entry2>& entries, uint32_t index, uint32_t count) {
  bool have_signature = false;
  for (auto& e : entries) {
    switch (e.function) {
      case 1:
        e.ebx = (e.ebx & 0x0000ffffu) | (index << 24) | ((count > 255 ? 255 : count) << 16);
        e.ecx |= kLeaf1EcxHypervisor;
        if (count > 1) e.edx |= kLeaf1EdxHtt;
        break;
      case 4: {
        // EAX[31:26] = cores per package - 1; EAX[25:14] = threads sharing
        // this cache - 1 (the last level is shared by all cores).
        uint32_t level = (e.eax >> 5) & 7;
        uint32_t sharing = level >= 3 ? count - 1 : 0;
        e.eax = (e.eax & 0x3fffu) | ((sharing & 0xfffu) << 14) | (((count - 1) & 0x3fu) << 26);
        break;
      }
      case 0xb:
      case 0x1f:
        topology_subleaf(e, index, count);
        break;
      case kKvmSignatureLeaf:
        have_signature = true;
        e.eax = kKvmFeaturesLeaf;
        std::memcpy(&e.ebx, "KVMK", 4);
        std::memcpy(&e.ecx, "VMKV", 4);
        std::memcpy(&e.edx, "M\0\0\0", 4);
        break;
      default:
        break;
    }
  }
  if (!have_signature) {
    kvm_cpuid_entry2 sig{};
    sig.function = kKvmSignatureLeaf;
    sig.eax = kKvmSignatureLeaf;  // no feature leaf offered
    std::memcpy(&sig.ebx, "KVMK", 4);
    std::memcpy(&sig.ecx, "VMKV", 4);
    std::memcpy(&sig.edx, "M\0\0\0", 4);
    entries.push_back(sig);
  }
}

void set_brand_string(std::vector<kvm_cpuid_entry2>& entries, std::span<const uint8_t, 48> brand) {
  constexpr uint32_t kExtMax = 0x80000000, kBrandFirst = 0x80000002, kBrandLast = 0x80000004;
  bool have_max = false;
  for (auto& e : entries) {
    if (e.function == kExtMax) {
      have_max = true;
      if (e.eax < kBrandLast) e.eax = kBrandLast;
    }
  }
  if (!have_max) {
    kvm_cpuid_entry2 e{};
    e.function = kExtMax;
    e.eax = kBrandLast;
    entries.push_back(e);
  }
  for (uint32_t leaf = kBrandFirst; leaf <= kBrandLast; ++leaf) {
    auto it = std::find_if(entries.begin(), entries.end(), [&](const kvm_cpuid_entry2& e) { return e.function == leaf; });
    if (it == entries.end()) {
      kvm_cpuid_entry2 e{};
      e.function = leaf;
      entries.push_back(e);
      it = entries.end() - 1;
    }
    const uint8_t* p = brand.data() + 16 * (leaf - kBrandFirst);
    std::memcpy(&it->eax, p, 4);
    std::memcpy(&it->ebx, p + 4, 4);
    std::memcpy(&it->ecx, p + 8, 4);
    std::memcpy(&it->edx, p + 12, 4);
  }
}

std::array<uint8_t, 48> host_brand_string() {
  std::array<uint8_t, 48> out{};
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (__get_cpuid(0x80000000, &a, &b, &c, &d) == 0 || a < 0x80000004) return out;
  for (unsigned i = 0; i < 3; ++i) {
    __get_cpuid(0x80000002 + i, &a, &b, &c, &d);
    std::memcpy(out.data() + 16 * i, &a, 4);
    std::memcpy(out.data() + 16 * i + 4, &b, 4);
    std::memcpy(out.data() + 16 * i + 8, &c, 4);
    std::memcpy(out.data() + 16 * i + 12, &d, 4);
  }
  out[47] = 0;
  return out;
}

size_t hide_unemulated_features(std::vector<kvm_cpuid_entry2>& entries) {
  auto bit = [](std::initializer_list<unsigned> bits) {
    uint32_t m = 0;
    for (unsigned b : bits) m |= 1u << b;
    return m;
  };
  // Bit numbers from the SDM vol. 2A CPUID tables (AMD APM vol. 3 for 0x80000001).
  const uint32_t leaf1_ecx = bit({1, 9, 12, 13, 19, 20, 22, 23, 25, 26, 27, 28, 29, 30});
  const uint32_t leaf7_ebx = bit({3, 4, 5, 8, 11, 14, 16, 17, 18, 19, 21, 26, 27, 28, 29, 30, 31});
  const uint32_t leaf7_ecx = bit({1, 3, 4, 5, 6, 8, 9, 10, 11, 12, 14, 27, 28});
  const uint32_t leaf7_edx = bit({2, 3, 8, 14, 22, 23, 24});
  const uint32_t leaf7_1_eax = bit({4, 5});
  const uint32_t ext1_ecx = bit({5, 6, 7, 11, 16, 21});
  size_t cleared = 0;
  auto clear = [&](uint32_t& reg, uint32_t mask) {
    cleared += static_cast<size_t>(std::popcount(reg & mask));
    reg &= ~mask;
  };
  for (auto& e : entries) {
    switch (e.function) {
      case 1: clear(e.ecx, leaf1_ecx); break;
      case 7:
        if (e.index == 0) {
          clear(e.ebx, leaf7_ebx);
          clear(e.ecx, leaf7_ecx);
          clear(e.edx, leaf7_edx);
        } else if (e.index == 1) {
          clear(e.eax, leaf7_1_eax);
        }
        break;
      case 0x80000001: clear(e.ecx, ext1_ecx); break;
      default: break;
    }
  }
  std::erase_if(entries, [](const kvm_cpuid_entry2& e) { return e.function == 0xd; });
  return cleared;
}

size_t drop_features_without_prerequisites(std::vector<kvm_cpuid_entry2>& entries) {
  auto bit = [](std::initializer_list<unsigned> bits) {
    uint32_t m = 0;
    for (unsigned b : bits) m |= 1u << b;
    return m;
  };
  auto find = [&](uint32_t function, uint32_t index) -> kvm_cpuid_entry2* {
    auto it = std::find_if(entries.begin(), entries.end(),
                           [&](const kvm_cpuid_entry2& e) { return e.function == function && e.index == index; });
    return it == entries.end() ? nullptr : &*it;
  };
  kvm_cpuid_entry2* l1 = find(1, 0);
  if (l1 == nullptr) return 0;
  kvm_cpuid_entry2* l7 = find(7, 0);
  kvm_cpuid_entry2* l7_1 = find(7, 1);
  kvm_cpuid_entry2* ext1 = find(0x80000001, 0);
  size_t cleared = 0;
  auto clear = [&](kvm_cpuid_entry2* e, uint32_t kvm_cpuid_entry2::*reg, uint32_t mask) {
    if (e == nullptr) return;
    cleared += static_cast<size_t>(std::popcount(e->*reg & mask));
    e->*reg &= ~mask;
  };
  // Bit numbers from the SDM vol. 2A CPUID tables (AMD APM vol. 3 for 0x80000001).
  constexpr unsigned kXsave = 26, kAvx = 28, kAvx512f = 16;
  // Every AVX-512 bit but AVX-512F itself.
  const uint32_t avx512_ebx = bit({17, 21, 26, 27, 28, 30, 31}), avx512_ecx = bit({1, 6, 11, 12, 14}),
                 avx512_edx = bit({2, 3, 8, 23}), avx512_7_1_eax = bit({5});
  if (!(l1->ecx & (1u << kXsave))) {
    clear(l1, &kvm_cpuid_entry2::ecx, bit({27, kAvx}));   // OSXSAVE AVX
    clear(l7, &kvm_cpuid_entry2::ecx, bit({3, 4}));       // PKU OSPKE
    clear(l7, &kvm_cpuid_entry2::edx, bit({22, 24, 25}));  // AMX-BF16 AMX-TILE AMX-INT8
    std::erase_if(entries, [](const kvm_cpuid_entry2& e) { return e.function == 0xd; });
    l1 = find(1, 0), l7 = find(7, 0), l7_1 = find(7, 1), ext1 = find(0x80000001, 0);
  }
  if (!(l1->ecx & (1u << kAvx))) {
    clear(l1, &kvm_cpuid_entry2::ecx, bit({12, 29}));                // FMA F16C
    clear(l7, &kvm_cpuid_entry2::ebx, bit({5, kAvx512f}));           // AVX2 AVX-512F
    clear(l7, &kvm_cpuid_entry2::ecx, bit({9, 10}));                 // VAES VPCLMULQDQ
    clear(l7_1, &kvm_cpuid_entry2::eax, bit({4}));                   // AVX-VNNI
    clear(ext1, &kvm_cpuid_entry2::ecx, bit({11, 16}));              // XOP FMA4
  }
  if (l7 == nullptr || !(l7->ebx & (1u << kAvx512f))) {
    clear(l7, &kvm_cpuid_entry2::ebx, avx512_ebx);
    clear(l7, &kvm_cpuid_entry2::ecx, avx512_ecx);
    clear(l7, &kvm_cpuid_entry2::edx, avx512_edx);
    clear(l7_1, &kvm_cpuid_entry2::eax, avx512_7_1_eax);
  }
  return cleared;
}

void setup_long_mode_sregs(kvm_sregs& sregs) {
  kvm_segment code{};
  code.base = 0;
  code.limit = 0xffffffff;
  code.selector = kBootCsSelector;
  code.type = 11;  // execute/read, accessed
  code.present = 1;
  code.dpl = 0;
  code.s = 1;
  code.l = 1;
  code.g = 1;
  kvm_segment data = code;
  data.selector = kBootDsSelector;
  data.type = 3;  // read/write, accessed
  data.l = 0;
  data.db = 1;
  kvm_segment tss{};
  tss.base = 0;
  tss.limit = 0xfffff;
  tss.selector = kBootTssSelector;
  tss.type = 11;  // 64-bit busy TSS
  tss.present = 1;
  tss.g = 1;
  sregs.cs = code;
  sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = data;
  sregs.tr = tss;
  sregs.gdt.base = kGdtAddr;
  sregs.gdt.limit = kGdtEntries * 8 - 1;
  sregs.idt.base = 0;
  sregs.idt.limit = 0;
  sregs.cr3 = kPml4Addr;
  sregs.cr4 = 0x20;        // PAE
  sregs.cr0 = 0x80000033;  // PG, NE, ET, MP, PE
  sregs.efer = 0x500;      // LMA, LME
}

kvm_regs boot_regs(uint64_t entry) {
  kvm_regs r{};
  r.rip = entry;
  r.rsi = kBootParamsAddr;
  r.rsp = kInitialStackTop;
  r.rbp = kInitialStackTop;
  r.rflags = 2;  // reserved bit 1; IF clear
  return r;
}

kvm_fpu boot_fpu() {
  kvm_fpu f{};
  f.fcw = 0x37f;
  f.mxcsr = 0x1f80;
  return f;
}

std::vector<MsrValue> boot_msrs() {
  return {
      {0x174, 0},  // IA32_SYSENTER_CS
      {0x175, 0},  // IA32_SYSENTER_ESP
      {0x176, 0},  // IA32_SYSENTER_EIP
      {0xc0000081, 0},  // STAR
      {0xc0000082, 0},  // LSTAR
      {0xc0000083, 0},  // CSTAR
      {0xc0000084, 0},  // SFMASK
      {0xc0000102, 0},  // KERNEL_GS_BASE
      {0x1a0, 1},       // IA32_MISC_ENABLE: fast strings
      {0x2ff, (1u << 11) | 6},  // MTRRdefType: enabled, write-back
  };
}

void setup_lapic_lvt(kvm_lapic_state& lapic) {
  constexpr size_t kLvtLint0 = 0x350, kLvtLint1 = 0x360;
  constexpr uint32_t kDeliveryModeMask = 0x700, kExtInt = 0x700, kNmi = 0x400;
  auto update = [&](size_t off, uint32_t mode) {
    uint32_t v;
    std::memcpy(&v, lapic.regs + off, 4);
    v = (v & ~kDeliveryModeMask) | mode;
    std::memcpy(lapic.regs + off, &v, 4);
  };
  update(kLvtLint0, kExtInt);
  update(kLvtLint1, kNmi);
}

}  // namespace tern::arch::x86_64

// Per-vCPU state for 64-bit entry, as KVM structures: CPUID filtered from
// KVM_GET_SUPPORTED_CPUID with this vCPU's APIC ID and the topology, the
// boot segment/control registers, FPU, MSRs and LAPIC LVTs. Pure functions
// over the structures, so they are unit-tested without /dev/kvm; vmm/
// performs the ioctls.
#pragma once

#include <linux/kvm.h>

#include <cstddef>
#include <cstdint>
#include <array>
#include <span>
#include <vector>

namespace tern::arch::x86_64 {

// Adjusts the supported CPUID entries for vCPU `index` of `count`:
//   leaf 1: initial APIC ID, logical processor count, HTT, hypervisor bit;
//   leaf 4: cores per package; leaves 0xB/0x1F: x2APIC ID and a flat
//   topology of `count` single-thread cores in one package;
//   0x40000000: the KVM signature ("KVMKVMKVM") and its max leaf.
// APIC IDs equal vCPU indices (the MADT lists the same).
void filter_cpuid(std::vector<kvm_cpuid_entry2>& entries, uint32_t index, uint32_t count);

// The processor brand string (leaves 0x80000002..4, 48 bytes, NUL-padded):
// KVM's supported CPUID leaves it zeroed for the VMM to fill, and a guest
// with an empty one shows no model name. tern passes the host's, as QEMU's
// `-cpu host` does. Adds the three leaves if missing (and raises
// 0x80000000's maximum to cover them).
void set_brand_string(std::vector<kvm_cpuid_entry2>& entries, std::span<const uint8_t, 48> brand);
// The brand string of the CPU running this process.
std::array<uint8_t, 48> host_brand_string();

// For a host whose KVM runs guest supervisor code in its instruction
// emulator (kvm_pvm; see vmm/host_kvm.h): removes from CPUID every feature
// whose instructions that emulator cannot execute and that tern does not
// complete itself (vmm/emulation_fallback.h), so that the guest kernel
// stays on code paths made of instructions the emulator has:
//   leaf 1 ECX: PCLMULQDQ SSSE3 FMA CX16 SSE4.1 SSE4.2 MOVBE POPCNT AES XSAVE
//               OSXSAVE AVX F16C RDRAND;
//   leaf 7: BMI1 HLE AVX2 BMI2 RTM MPX RDSEED ADX SHA, every AVX-512 and AMX
//           bit, PKU, GFNI, VAES, VPCLMULQDQ, MOVDIRI, MOVDIR64B, WAITPKG,
//           SERIALIZE, AVX-VNNI;
//   leaf 0xD (XSAVE state) removed;
//   leaf 0x80000001 ECX: ABM(LZCNT) SSE4A MISALIGNSSE XOP FMA4 TBM.
// Returns the number of feature bits it cleared.
size_t hide_unemulated_features(std::vector<kvm_cpuid_entry2>& entries);

// Removes the features whose prerequisites the entries lack, as no real
// CPU offers them: without XSAVE no AVX, OSXSAVE, PKU or AMX and no leaf
// 0xD; without AVX none of the VEX/EVEX-only extensions (FMA, F16C, AVX2,
// VAES, VPCLMULQDQ, AVX-VNNI, XOP, FMA4, every AVX-512); without AVX-512F
// no other AVX-512 bit. A guest kernel trusts each bit on its own (Linux
// runs its AVX crypto on the AVX bit even where it never enabled XSAVE,
// and takes #UD), so a host whose CPU model is inconsistent (QEMU TCG
// `-cpu max,xsave=off` under the lab) must not pass that on. Returns the
// number of feature bits cleared (0 on any real CPU).
size_t drop_features_without_prerequisites(std::vector<kvm_cpuid_entry2>& entries);

// Segment and control registers for 64-bit entry (boot.rst "64-bit BOOT
// PROTOCOL": long mode, paging with an identity map, __BOOT_CS/__BOOT_DS),
// applied on top of `sregs` as read from KVM_GET_SREGS.
void setup_long_mode_sregs(kvm_sregs& sregs);
// RIP = entry, RSI = boot_params, RSP (ELF kernels), RFLAGS with IF clear.
kvm_regs boot_regs(uint64_t entry);
// x87 control word and MXCSR at their reset values.
kvm_fpu boot_fpu();

struct MsrValue {
  uint32_t index;
  uint64_t value;
};
// MSRs given defined values at boot (SYSENTER/SYSCALL cleared, fast strings
// on, MTRRs enabled with write-back default).
std::vector<MsrValue> boot_msrs();

// LINT0 as ExtINT (the PIC's line, as a BIOS sets it) and LINT1 as NMI in
// the LAPIC register page from KVM_GET_LAPIC.
void setup_lapic_lvt(kvm_lapic_state& lapic);

}  // namespace tern::arch::x86_64

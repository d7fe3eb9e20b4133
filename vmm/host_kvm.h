// What kind of KVM this host has, and what tern does about it.
//
// On a nested, software-emulated KVM (kvm_pvm: "Pagetable-based Virtual
// Machine") an unmodified guest kernel's supervisor code runs in KVM's
// instruction emulator at a few million instructions per second. Tern then
// (profile "emulated", chosen by `--cpus profile=auto` on such a host):
//   - hides from CPUID the features the emulator cannot execute
//     (arch::x86_64::hide_unemulated_features). kvm_pvm applies a VMM's
//     CPUID only to the bits it reports in KVM_GET_SUPPORTED_CPUID; the
//     guest sees the host's own value for every other bit (measured: leaf 1
//     ECX supported 0x81202000, the guest sees 0xf7f8_3203 whatever tern
//     sets, XSAVE, AVX and SSE4 included). So, for a Linux kernel, tern
//   - appends `noxsave` and `clearcpuid=` with the same features in the
//     kernel's own numbering (word * 32 + bit; words 4 and 9 are CPUID
//     leaf 1 ECX and leaf 7 EBX in every Linux since 4.x), so the kernel
//     hides them from itself, and `cryptomgr.notests` (the crypto self-tests
//     ran for more than 7 minutes there). A parameter the user already gave
//     (noxsave, clearcpuid, cryptomgr.*) is left as the user wrote it.
// tern says so on stderr at start, with the resulting command line. On
// hardware KVM nothing is changed; `--cpus profile=host` keeps the host's
// features anywhere.
#pragma once

#include <string>

#include "vmm/config.h"

namespace tern::vmm {

enum class HostKvm { Hardware, Emulated };

// Linux's numbers (arch/x86/include/asm/cpufeatures.h) for the leaf 1 ECX
// and leaf 7 EBX features of arch::x86_64::hide_unemulated_features:
// pclmulqdq ssse3 fma cx16 sse4.1 sse4.2 movbe popcnt aes avx f16c rdrand,
// bmi1 avx2 bmi2 rdseed adx sha_ni. XSAVE goes through `noxsave`, which also
// takes every feature that depends on it (AVX-512, ...) away.
inline constexpr const char* kLinuxClearCpuid =
    "clearcpuid=129,137,140,141,147,148,150,151,153,156,157,158,291,293,296,306,307,317";

// kvm_pvm loaded (/sys/module/kvm_pvm) means an emulated KVM.
HostKvm detect_host_kvm();

// The profile `configured` resolves to on `host`.
CpuProfile resolve_cpu_profile(CpuProfile configured, HostKvm host);

// The command line a Linux guest gets under `profile` (other kernels get
// the user's as is).
std::string guest_cmdline(const std::string& cmdline, CpuProfile profile);

}  // namespace tern::vmm

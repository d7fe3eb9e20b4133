// What kind of KVM this host has, and what tern does about it.
//
// On a nested, software-emulated KVM (kvm_pvm: "Pagetable-based Virtual
// Machine") an unmodified guest kernel's supervisor code runs in KVM's
// instruction emulator at a few million instructions per second. Tern then
// (profile "emulated", chosen by `--cpus profile=auto` on such a host):
//   - hides from CPUID the features the emulator cannot execute
//     (arch::x86_64::hide_unemulated_features), and
//   - appends, for a Linux kernel, parameters that skip work costing minutes there and
//     nothing a guest depends on: `cryptomgr.notests` (the crypto
//     self-tests ran for more than 7 minutes), unless the command line
//     already sets a cryptomgr.* parameter.
// tern says so on stderr at start. On hardware KVM nothing is changed;
// `--cpus profile=host` keeps the host's features anywhere.
#pragma once

#include <string>

#include "vmm/config.h"

namespace tern::vmm {

enum class HostKvm { Hardware, Emulated };

// kvm_pvm loaded (/sys/module/kvm_pvm) means an emulated KVM.
HostKvm detect_host_kvm();

// The profile `configured` resolves to on `host`.
CpuProfile resolve_cpu_profile(CpuProfile configured, HostKvm host);

// The command line a Linux guest gets under `profile` (other kernels get
// the user's as is).
std::string guest_cmdline(const std::string& cmdline, CpuProfile profile);

}  // namespace tern::vmm

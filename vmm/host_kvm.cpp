#include "vmm/host_kvm.h"

#include <unistd.h>

namespace tern::vmm {

HostKvm detect_host_kvm() {
  return ::access("/sys/module/kvm_pvm", F_OK) == 0 ? HostKvm::Emulated : HostKvm::Hardware;
}

CpuProfile resolve_cpu_profile(CpuProfile configured, HostKvm host) {
  if (configured != CpuProfile::Auto) return configured;
  return host == HostKvm::Emulated ? CpuProfile::Emulated : CpuProfile::Host;
}

std::string guest_cmdline(const std::string& cmdline, CpuProfile profile) {
  if (profile != CpuProfile::Emulated) return cmdline;
  std::string out = cmdline;
  if (out.find("cryptomgr.") == std::string::npos) {
    if (!out.empty() && out.back() != ' ') out += ' ';
    out += "cryptomgr.notests";
  }
  return out;
}

}  // namespace tern::vmm

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

namespace {

bool has_parameter(const std::string& cmdline, const std::string& name) {
  // A whole word: at the start or after a space, then '=', a space or the end.
  for (size_t at = cmdline.find(name); at != std::string::npos; at = cmdline.find(name, at + 1)) {
    bool starts = at == 0 || cmdline[at - 1] == ' ';
    size_t end = at + name.size();
    bool ends = end == cmdline.size() || cmdline[end] == ' ' || cmdline[end] == '=' || name.back() == '.';
    if (starts && ends) return true;
  }
  return false;
}

}  // namespace

std::string guest_cmdline(const std::string& cmdline, CpuProfile profile) {
  if (profile != CpuProfile::Emulated) return cmdline;
  std::string out = cmdline;
  auto add = [&](const char* param) {
    if (!out.empty() && out.back() != ' ') out += ' ';
    out += param;
  };
  if (!has_parameter(out, "noxsave")) add("noxsave");
  if (!has_parameter(out, "clearcpuid")) add(kLinuxClearCpuid);
  if (!has_parameter(out, "cryptomgr.")) add("cryptomgr.notests");
  return out;
}

}  // namespace tern::vmm

// The sandbox: one seccomp filter per thread kind (libseccomp) and a
// Landlock domain over the files the VM was configured with
// (docs/SECURITY.md, "Sandbox").
//
// Order, because both apply to the calling thread and to the threads it
// creates later, never to others:
//   1. Sandbox::prepare(), before the first thread: installs the hook that
//      every thread runs first (base/thread_sandbox.h) and the SIGSYS
//      handler. A thread that starts during set-up (the console writer)
//      waits in the hook.
//   2. The set-up opens everything: KVM, the kernel and initramfs (read
//      into guest RAM and closed), the disks and their backing chains, the
//      serial file, the API socket.
//   3. Sandbox::arm(): builds the Landlock ruleset from the configuration
//      and lets every waiting and later thread confine itself: no new
//      privileges, the Landlock domain, its kind's seccomp filter.
//   4. The main thread confines itself last, once it has started the vCPU
//      and console threads (Machine::run).
#pragma once

#include <expected>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/thread_sandbox.h"
#include "vmm/config.h"

namespace tern::vmm {

// The highest Landlock ABI this kernel offers; 0 when it has none.
int landlock_abi();

// The system calls a thread of `kind` may make (each one a rule; argument
// checks noted in docs/SECURITY.md), by name.
std::vector<std::string_view> allowed_syscalls(ThreadKind kind);

class Sandbox {
 public:
  // Nothing to do (and no hook) when --seccomp false and Landlock is off.
  [[nodiscard]] static std::expected<std::unique_ptr<Sandbox>, std::string> prepare(const VmConfig& config);
  // After set-up: the Landlock ruleset (disks, backing chains, the API
  // socket's directory, --landlock-rules), then threads may confine
  // themselves. `image_fds`: every descriptor open on a disk image or a
  // backing file (Machine::image_fds). The message names the path that failed.
  [[nodiscard]] std::expected<void, std::string> arm(std::vector<int> image_fds);
  ~Sandbox();  // removes the hook; confined threads stay confined
  Sandbox(const Sandbox&) = delete;
  Sandbox& operator=(const Sandbox&) = delete;

 private:
  explicit Sandbox(const VmConfig& config) : config_(config) {}
  const VmConfig& config_;
};

}  // namespace tern::vmm

// The sandbox's allow-lists (vmm/sandbox.h): every kind has one, none lets a
// thread start a program, open a file, reach the network or another
// process, and only the launcher creates threads. Prints the count per
// kind for docs/SECURITY.md.
#include "vmm/sandbox.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>

namespace tern::vmm {
namespace {

bool allows(ThreadKind kind, std::string_view name) {
  auto list = allowed_syscalls(kind);
  return std::find(list.begin(), list.end(), name) != list.end();
}

TEST(Sandbox, NoKindOpensExecsConnectsOrTracesAndOnlyTheLauncherClones) {
  for (size_t k = 0; k < kThreadKindCount; ++k) {
    auto kind = static_cast<ThreadKind>(k);
    auto list = allowed_syscalls(kind);
    std::printf("[sandbox %-12s %zu system calls]\n", thread_kind_name(kind), list.size());
    EXPECT_FALSE(list.empty());
    for (const char* never : {"execve", "execveat", "open", "openat", "openat2", "creat", "socket", "connect",
                              "bind", "listen", "ptrace", "process_vm_writev", "process_vm_readv", "kill", "fork",
                              "vfork", "clone3", "mount", "chmod", "rename", "renameat2", "memfd_create",
                              "pidfd_open", "setuid", "unshare", "bpf", "perf_event_open"}) {
      EXPECT_FALSE(allows(kind, never)) << thread_kind_name(kind) << " allows " << never;
    }
    EXPECT_EQ(allows(kind, "clone"), kind == ThreadKind::Launcher) << thread_kind_name(kind);
  }
  // Removing the API socket at exit is the main thread's alone.
  for (size_t k = 0; k < kThreadKindCount; ++k) {
    auto kind = static_cast<ThreadKind>(k);
    EXPECT_EQ(allows(kind, "unlink"), kind == ThreadKind::Main) << thread_kind_name(kind);
  }
}

TEST(Sandbox, TheLauncherHoldsTheListsOfTheThreadsItCreates) {
  for (ThreadKind launched : {ThreadKind::VirtioQueue, ThreadKind::IoWorker}) {
    for (std::string_view name : allowed_syscalls(launched)) {
      EXPECT_TRUE(allows(ThreadKind::Launcher, name)) << name << " (" << thread_kind_name(launched) << ")";
    }
  }
}

}  // namespace
}  // namespace tern::vmm

// The sandbox's allow-lists (vmm/sandbox.h): every kind has one, none lets a
// thread start a program, open a file, reach the network or another
// process, and only the launcher creates threads. Prints the count per
// kind for docs/SECURITY.md.
#include "vmm/sandbox.h"

#include <gtest/gtest.h>

#include <seccomp.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "block/image.h"
#include "block/io/wait.h"
#include "block/open.h"
#include "tests/support/support.h"

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
                              "pidfd_open", "setuid", "unshare", "bpf", "perf_event_open", "dup", "dup2", "dup3",
                              // F_SETOWN/F_SETSIG point SIGIO at any process; F_DUPFD copies an image fd
                              "fcntl", "mknodat", "splice", "sendfile", "copy_file_range", "mremap",
                              "remap_file_pages", "pwritev2", "io_uring_setup"}) {
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

// Runs `body` in a forked child whose stderr comes back here; the child
// exits with body's status (the sandbox's SIGSYS handler may end it first).
struct Child {
  int wait_status = -1;  // not a normal exit until waitpid says so
  std::string stderr_text;
};
Child run_child(const std::function<int()>& body) {
  Child c;
  int err[2];
  if (::pipe(err) != 0) return c;
  pid_t pid = ::fork();
  if (pid == 0) {
    ::close(err[0]);
    ::dup2(err[1], STDERR_FILENO);
    ::_exit(body());
  }
  ::close(err[1]);
  if (pid < 0) {
    ::close(err[0]);
    return c;
  }
  char buf[256];
  for (ssize_t n; (n = ::read(err[0], buf, sizeof buf)) > 0;) c.stderr_text.append(buf, static_cast<size_t>(n));
  ::close(err[0]);
  int status = 0;
  if (::waitpid(pid, &status, 0) == pid) c.wait_status = status;
  return c;
}

// A kernel without seccomp filters is found by prepare(), first thing in
// main, not by the first thread that loads its filter after set-up. The
// child plays such a kernel: seccomp() is ENOSYS, prctl's seccomp
// operations EINVAL.
TEST(Sandbox, AKernelWithoutSeccompFiltersIsRefusedAtStart) {
  Child c = run_child([] {
    if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return 2;
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
    bool ok = ctx && seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(seccomp), 0) == 0 &&
              seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EINVAL), SCMP_SYS(prctl), 1,
                               SCMP_A0(SCMP_CMP_EQ, PR_SET_SECCOMP)) == 0 &&
              seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EINVAL), SCMP_SYS(prctl), 1,
                               SCMP_A0(SCMP_CMP_EQ, PR_GET_SECCOMP)) == 0 &&
              seccomp_load(ctx) == 0;
    if (!ok) return 2;
    VmConfig config;
    config.sandbox.seccomp = SeccompMode::Kill;
    config.sandbox.landlock = LandlockMode::Off;
    auto sandbox = Sandbox::prepare(config);
    if (sandbox) {
      std::fprintf(stderr, "prepare succeeded\n");
      return 1;
    }
    std::fprintf(stderr, "%s\n", sandbox.error().c_str());
    return 0;
  });
  const std::string& text = c.stderr_text;
  ASSERT_TRUE(WIFEXITED(c.wait_status)) << text;
  EXPECT_EQ(WEXITSTATUS(c.wait_status), 0) << text;
  EXPECT_NE(text.find("--seccomp true: this kernel offers no seccomp filters"), std::string::npos) << text;
}

// The main thread closes the disks after every other thread stopped: a QCOW2
// disk writes back its tables and clears its dirty bit then, under the main
// thread's own filter. When the block layer's one transfer loop first sent
// a single buffer through pwritev (which that filter does not list), tern
// was killed at every QCOW2 power-off ("forbidden system call: pwritev").
TEST(Sandbox, TheMainThreadClosesADirtyQcow2Disk) {
  test_support::TempDir dir("tern-sandbox");
  std::string img = dir.file("d.qcow2");
  block::CreateOptions create;
  create.path = img;
  create.size = 16 << 20;
  ASSERT_TRUE(block::create_image(create).has_value());
  auto disk = block::open_disk({.path = img});
  ASSERT_TRUE(disk.has_value()) << disk.error().message();
  {
    auto ctx = (*disk)->make_io_context(4);
    ASSERT_TRUE(ctx.has_value());
    std::vector<uint8_t> data(65536, 0x5a);
    iovec v{data.data(), data.size()};
    block::Request w;
    w.op = block::Op::Write;
    w.offset = 1 << 20;
    w.iov = std::span<const iovec>(&v, 1);
    ASSERT_TRUE(block::io::run_to_completion(**ctx, w).has_value());  // a new cluster: tables to write back
  }
  Child c = run_child([&] {
    VmConfig config;
    config.sandbox.seccomp = SeccompMode::Kill;
    config.sandbox.landlock = LandlockMode::Off;
    auto sandbox = Sandbox::prepare(config);
    if (!sandbox || !(*sandbox)->arm({})) return 2;
    enter_thread_sandbox(ThreadKind::Main);
    return (*disk)->close() ? 0 : 3;
  });
  const std::string& text = c.stderr_text;
  ASSERT_TRUE(WIFEXITED(c.wait_status)) << text;
  EXPECT_EQ(WEXITSTATUS(c.wait_status), 0) << text;
  EXPECT_EQ(text.find("forbidden system call"), std::string::npos) << text;
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

#include "vmm/sandbox.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/seccomp.h>
#include <linux/kvm.h>
#include <linux/landlock.h>
#include <malloc.h>
#include <sched.h>
#include <seccomp.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysinfo.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <optional>
#include <span>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#endif

#include "base/error.h"
#include "base/unique_fd.h"
#include "block/chain.h"
#include "vmm/kvm.h"
#include "vmm/vcpu.h"  // kExitVmmFailure

// Newer than Debian 12's <linux/landlock.h> (ABI 2); values from the
// kernel's uapi header.
#ifndef LANDLOCK_ACCESS_FS_TRUNCATE
#define LANDLOCK_ACCESS_FS_TRUNCATE (1ULL << 14)  // ABI 3
#endif
#ifndef LANDLOCK_ACCESS_FS_IOCTL_DEV
#define LANDLOCK_ACCESS_FS_IOCTL_DEV (1ULL << 15)  // ABI 5
#endif
#ifndef LANDLOCK_ACCESS_NET_BIND_TCP
#define LANDLOCK_ACCESS_NET_BIND_TCP (1ULL << 0)  // ABI 4
#define LANDLOCK_ACCESS_NET_CONNECT_TCP (1ULL << 1)
#endif
#ifndef LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET
#define LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET (1ULL << 0)  // ABI 6
#endif
#ifndef LANDLOCK_SCOPE_SIGNAL
#define LANDLOCK_SCOPE_SIGNAL (1ULL << 1)  // ABI 6
#endif
#ifndef LANDLOCK_CREATE_RULESET_ERRATA
#define LANDLOCK_CREATE_RULESET_ERRATA (1U << 1)  // ABI 7 and stable backports
#endif
#ifndef SECCOMP_GET_ACTION_AVAIL
#define SECCOMP_GET_ACTION_AVAIL 2
#endif

namespace tern::vmm {
namespace {

using Unexpected = std::unexpected<std::string>;

// ---- The allow-lists (docs/SECURITY.md, "Sandbox", gives each reason). ----

// How a rule narrows a call's arguments.
enum class Arg : uint8_t {
  Any,
  NoExec,        // mprotect: never PROT_EXEC (no new code)
  AnonNoExec,    // mmap: anonymous and private only, never PROT_EXEC
  OwnProcess,    // tgkill: only threads of this process
  Threads,       // clone: only CLONE_THREAD (a thread, never a process)
  SandboxPrctl,  // prctl: PR_SET_NAME and PR_SET_NO_NEW_PRIVS only
  VcpuIoctls,    // ioctl: kVcpuIoctls
  IrqIoctls,     // ioctl: kIrqIoctls (a device's MSI-X vector moves)
  TeardownIoctls,  // ioctl: kTeardownIoctls (the devices go)
  IrqLine,       // ioctl: KVM_IRQ_LINE only (the UART's interrupt)
  ApiIoctls,     // ioctl: FIONBIO only (Asio makes accepted sockets non-blocking)
};

struct Allow {
  const char* name;
  Arg arg = Arg::Any;
};

// Every thread: memory (malloc and thread stacks: anonymous private
// mappings only, so no thread can map an image's descriptor and write it
// through memory; nothing executable), locks and condition variables, its
// own end, stderr, eventfd signals and the SIGSYS report (write: never to
// an image from a kind without pwrite, see build_image_guard), abort().
constexpr Allow kCommon[] = {
    {"futex"},        {"sched_yield"},     {"write"},  {"exit"},          {"exit_group"},
    {"rt_sigreturn"}, {"rt_sigprocmask"},  {"mmap", Arg::AnonNoExec},     {"mprotect", Arg::NoExec},
    {"munmap"},       {"madvise"},         {"brk"},    {"clock_gettime"}, {"getpid"},
    {"gettid"},       {"tgkill", Arg::OwnProcess}, {"restart_syscall"},
};

constexpr Allow kVcpu[] = {
    {"ioctl", Arg::VcpuIoctls},
    // Activating a virtio queue (the driver's DRIVER_OK): its eventfds,
    // epoll set and AIO context are made here (its thread by the
    // launcher); a reset closes them, reaps AIO transfers still in the
    // kernel and reads a last completion count.
    {"eventfd2"}, {"epoll_create1"}, {"epoll_ctl"}, {"io_setup"}, {"io_getevents"}, {"io_destroy"}, {"close"},
    {"read"},
};

constexpr Allow kVirtioQueue[] = {
    {"epoll_wait"}, {"read"},  {"ioctl", Arg::IrqIoctls},
    {"io_submit"},  {"io_getevents"},
    {"preadv"},     {"pwritev"}, {"pread64"}, {"pwrite64"}, {"fdatasync"}, {"fallocate"}, {"lseek"},
};

constexpr Allow kIoWorker[] = {
    {"preadv"}, {"pwritev"}, {"pread64"}, {"pwrite64"}, {"fdatasync"}, {"fallocate"},
};

constexpr Allow kControl[] = {
    {"poll"},     {"read"},    {"ioctl", Arg::IrqIoctls},
    {"ftruncate"}, {"fallocate"}, {"pread64"}, {"pwrite64"}, {"preadv"}, {"pwritev"}, {"fdatasync"},
    {"newfstatat"}, {"lseek"},
};

constexpr Allow kApi[] = {
    {"epoll_wait"}, {"epoll_ctl"}, {"timerfd_settime"}, {"read"}, {"accept"},
    {"recvmsg"},    {"sendmsg"},   {"shutdown"},        {"close"}, {"ioctl", Arg::ApiIoctls},
};

constexpr Allow kSignal[] = {
    {"poll"}, {"read"},
};

constexpr Allow kConsoleInput[] = {
    {"poll"}, {"read"}, {"ioctl", Arg::IrqLine},
};

constexpr Allow kConsoleOutput[] = {
    {"poll"},
};

constexpr Allow kMain[] = {
    // Waking and joining the threads, closing the disks (QCOW2 writes back
    // its tables and clears its dirty bit; AIO contexts and OFD locks go),
    // unbinding the devices' irqfds and ioeventfds, removing the API socket.
    // No fcntl: nothing at teardown uses it, and F_SETOWN/F_SETSIG would
    // point SIGIO at any process, F_DUPFD copy an image's descriptor.
    {"read"},   {"close"},     {"epoll_ctl"}, {"io_getevents"}, {"io_destroy"}, {"pread64"}, {"pwrite64"}, {"fdatasync"},
    {"ftruncate"}, {"lseek"},  {"newfstatat"}, {"unlink"},
    {"ioctl", Arg::TeardownIoctls},
};

constexpr Allow kLauncher[] = {
    // A new thread: its stack is mmap (common), then glibc's start_thread
    // and the thread's sandbox entry run under this filter until the
    // thread's own is loaded.
    {"clone", Arg::Threads}, {"set_robust_list"}, {"rseq"}, {"prctl", Arg::SandboxPrctl}, {"seccomp"},
    {"landlock_restrict_self"},
};

// The KVM ioctls of a vCPU thread: its own run loop and registers (the
// emulation fallback, which walks the guest's page tables itself and sets
// CR2 with KVM_SET_SREGS for a #PF, and the SIGUSR1 dump), and what the virtio-pci and
// serial devices do when the guest programs them (ioeventfds on BAR
// placement, irqfds and MSI routes for MSI-X, the UART's line).
constexpr unsigned long kVcpuIoctls[] = {
    KVM_RUN,       KVM_GET_REGS, KVM_SET_REGS,      KVM_GET_SREGS, KVM_SET_SREGS,
    KVM_GET_FPU,   KVM_SET_FPU,  KVM_GET_VCPU_EVENTS, KVM_SET_VCPU_EVENTS,
    KVM_IOEVENTFD, KVM_IRQFD,    kKvmSetGsiRouting, KVM_IRQ_LINE,
};
// An MSI-X vector bound or moved by a queue or the control thread.
constexpr unsigned long kIrqIoctls[] = {KVM_IRQFD, kKvmSetGsiRouting};
constexpr unsigned long kTeardownIoctls[] = {KVM_IRQFD, kKvmSetGsiRouting, KVM_IOEVENTFD};
constexpr unsigned long kIrqLineIoctls[] = {KVM_IRQ_LINE};
constexpr unsigned long kApiIoctls[] = {FIONBIO};

std::span<const Allow> own_list(ThreadKind kind) {
  switch (kind) {
    case ThreadKind::Main: return kMain;
    case ThreadKind::Vcpu: return kVcpu;
    case ThreadKind::VirtioQueue: return kVirtioQueue;
    case ThreadKind::IoWorker: return kIoWorker;
    case ThreadKind::Control: return kControl;
    case ThreadKind::Api: return kApi;
    case ThreadKind::Signal: return kSignal;
    case ThreadKind::ConsoleInput: return kConsoleInput;
    case ThreadKind::ConsoleOutput: return kConsoleOutput;
    case ThreadKind::Launcher: return kLauncher;
  }
  std::abort();
}

#if defined(__SANITIZE_ADDRESS__)
// -DTERN_SANITIZE=address builds only: UBSan's vptr check finds out whether
// memory is readable by writing it into a fresh pipe; ASan gives every
// thread an alternate signal stack and removes it when the thread ends, and
// reads a new thread's stack bounds (pthread_getattr_np asks for its CPUs).
constexpr Allow kSanitizer[] = {{"pipe2"}, {"close"}, {"sigaltstack"}, {"sched_getaffinity"}};
#endif

// The launcher's threads inherit its filter, so it holds theirs too.
constexpr ThreadKind kLaunched[] = {ThreadKind::VirtioQueue, ThreadKind::IoWorker};

std::vector<Allow> full_list(ThreadKind kind) {
  std::vector<Allow> out;
  auto add = [&](std::span<const Allow> list) {
    for (const Allow& a : list) {
      bool seen = false;
      for (const Allow& b : out) seen = seen || (std::strcmp(a.name, b.name) == 0 && a.arg == b.arg);
      if (!seen) out.push_back(a);
    }
  };
  add(kCommon);
#if defined(__SANITIZE_ADDRESS__)
  add(kSanitizer);
#endif
  add(own_list(kind));
  if (kind == ThreadKind::Launcher) {
    for (ThreadKind k : kLaunched) add(own_list(k));
  }
  return out;
}

// Whether the kind's list lets it write images anyway (pwrite64).
bool writes_images(ThreadKind kind) {
  for (const Allow& a : full_list(kind)) {
    if (std::strcmp(a.name, "pwrite64") == 0) return true;
  }
  return false;
}

// ---- Process-wide state: the hook is a plain function. ----

struct State {
  bool prepared = false;
  SeccompMode seccomp = SeccompMode::Off;
  bool landlock = false;
  std::vector<std::string> test;
  std::vector<std::string> test_opens;  // --sandbox-test open=: the main thread tries these
  std::vector<std::string> test_unlinks;  // --sandbox-test unlink=: and removes these
  std::vector<pid_t> test_kills;          // --sandbox-test kill=: and signals these (0)
  pid_t pid = 0;
  std::mutex mutex;
  std::condition_variable_any armed_cv;
  bool armed = false;  // guarded by mutex
  UniqueFd ruleset;    // set before armed
  std::vector<int> image_fds;  // set before armed: disk images and backing files
};

// Process-wide like the filters and the domain it describes; it outlives
// every thread (a confined thread's SIGSYS report may read it at the end).
State g_state;
// For the SIGSYS report: a thread the launcher made runs under the
// launcher's filter until it has entered its own sandbox.
thread_local const char* t_kind_name = "new (not yet confined)";

// Syscall names for the SIGSYS handler, resolved once: the handler may
// only use async-signal-safe calls.
constexpr int kMaxSyscall = 512;
std::array<std::array<char, 32>, kMaxSyscall> g_names{};

void append(char* buf, size_t& n, size_t cap, const char* s) {
  while (*s && n + 1 < cap) buf[n++] = *s++;
}
void append_number(char* buf, size_t& n, size_t cap, unsigned long long v, int base) {
  char digits[24];
  int d = 0;
  do {
    digits[d++] = "0123456789abcdef"[v % static_cast<unsigned>(base)];
    v /= static_cast<unsigned>(base);
  } while (v != 0 && d < 24);
  if (base == 16) append(buf, n, cap, "0x");
  while (d > 0 && n + 1 < cap) buf[n++] = digits[--d];
}

// --seccomp true: a forbidden call lands here, on the thread that made it.
void on_sigsys(int, siginfo_t* info, void* context) {
  char buf[256];
  size_t n = 0;
  const int nr = info->si_syscall;
  append(buf, n, sizeof buf, "tern: seccomp: the ");
  append(buf, n, sizeof buf, t_kind_name);
  append(buf, n, sizeof buf, " thread made a forbidden system call: ");
  append(buf, n, sizeof buf, nr >= 0 && nr < kMaxSyscall && g_names[nr][0] ? g_names[nr].data() : "?");
  append(buf, n, sizeof buf, " (");
  append_number(buf, n, sizeof buf, static_cast<unsigned>(nr), 10);
  const auto* uc = static_cast<const ucontext_t*>(context);
  auto arg = [&](int reg) { return static_cast<unsigned long long>(uc->uc_mcontext.gregs[reg]); };
  if (nr == SYS_ioctl) {
    append(buf, n, sizeof buf, ", request ");
    append_number(buf, n, sizeof buf, arg(REG_RSI), 16);
  } else if (nr == SYS_socket) {
    append(buf, n, sizeof buf, ", family ");
    append_number(buf, n, sizeof buf, arg(REG_RDI), 10);
  } else if (nr == SYS_write) {
    append(buf, n, sizeof buf, ", fd ");
    append_number(buf, n, sizeof buf, arg(REG_RDI) & 0xffffffffu, 10);
  } else if (nr == SYS_mmap) {
    append(buf, n, sizeof buf, ", prot ");
    append_number(buf, n, sizeof buf, arg(REG_RDX), 16);
    append(buf, n, sizeof buf, ", flags ");
    append_number(buf, n, sizeof buf, arg(REG_R10), 16);
  }
  append(buf, n, sizeof buf, "); exiting\n");
  (void)!::write(STDERR_FILENO, buf, n);
  // The system call itself, not _exit(): a sanitizer's _exit runs its
  // exit-time checks, which make more forbidden calls.
  ::syscall(SYS_exit_group, kExitVmmFailure);
}

[[noreturn]] void die(ThreadKind kind, const char* step, int err) {
  std::fprintf(stderr, "tern: sandbox: %s thread: %s: %s\n", thread_kind_name(kind), step, errno_text(err).c_str());
  ::_exit(kExitVmmFailure);
}

// ioctl only with these requests (the kernel compares the low 32 bits).
int allow_ioctls(scmp_filter_ctx ctx, std::span<const unsigned long> requests) {
  for (unsigned long request : requests) {
    int rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(ioctl), 1, SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffu, request));
    if (rc != 0) return rc;
  }
  return 0;
}

// A libseccomp filter for `kind`; errors are the negative errno libseccomp returns.
std::expected<scmp_filter_ctx, int> build_filter(ThreadKind kind, SeccompMode mode, pid_t pid) {
  scmp_filter_ctx ctx = seccomp_init(mode == SeccompMode::Log ? SCMP_ACT_LOG : SCMP_ACT_TRAP);
  if (!ctx) return std::unexpected(ENOMEM);
  auto fail = [&](int rc) {
    seccomp_release(ctx);
    return std::unexpected(-rc);
  };
  for (const Allow& a : full_list(kind)) {
    int nr = seccomp_syscall_resolve_name(a.name);
    if (nr == __NR_SCMP_ERROR) return fail(-EINVAL);
    int rc = 0;
    switch (a.arg) {
      case Arg::Any:
        rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0);
        break;
      case Arg::NoExec:
        rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 1, SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_EXEC, 0));
        break;
      case Arg::AnonNoExec:
        // MAP_ANONYMOUS | MAP_PRIVATE among the anonymous and type bits
        // (MAP_SHARED_VALIDATE is MAP_SHARED | MAP_PRIVATE): the fd is
        // ignored, nothing reaches a file. No thread maps a file after
        // set-up (the vCPUs' kvm_run areas are mapped before).
        rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 2, SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_EXEC, 0),
                              SCMP_A3(SCMP_CMP_MASKED_EQ, MAP_ANONYMOUS | MAP_SHARED | MAP_PRIVATE,
                                      MAP_ANONYMOUS | MAP_PRIVATE));
        break;
      case Arg::OwnProcess:
        rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 1, SCMP_A0(SCMP_CMP_EQ, static_cast<scmp_datum_t>(pid)));
        break;
      case Arg::Threads:
        rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 1, SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_THREAD, CLONE_THREAD));
        // glibc tries clone3 first and falls back to clone on ENOSYS;
        // clone3's flags sit in memory a filter cannot read.
        if (rc == 0) rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
        break;
      case Arg::SandboxPrctl:
        rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 1, SCMP_A0(SCMP_CMP_EQ, PR_SET_NAME));
        if (rc == 0) rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 1, SCMP_A0(SCMP_CMP_EQ, PR_SET_NO_NEW_PRIVS));
        break;
      case Arg::VcpuIoctls:
        rc = allow_ioctls(ctx, kVcpuIoctls);
        break;
      case Arg::IrqIoctls:
        rc = allow_ioctls(ctx, kIrqIoctls);
        break;
      case Arg::TeardownIoctls:
        rc = allow_ioctls(ctx, kTeardownIoctls);
        break;
      case Arg::IrqLine:
        rc = allow_ioctls(ctx, kIrqLineIoctls);
        break;
      case Arg::ApiIoctls:
        rc = allow_ioctls(ctx, kApiIoctls);
        break;
    }
    if (rc != 0) return fail(rc);
  }
  return ctx;
}

// The first filter of a thread whose kind may not pwrite (vcpu, api,
// signal, console-in, console-out): write() to a disk image's or backing
// file's descriptor is forbidden (kill, or logged in --seccomp log),
// everything else is left to the kind's list. Not for the kinds with
// pwrite: it would add nothing, and main and the launcher outlive the
// disks, whose numbers are then free for new descriptors (UBSan's probe
// pipe in sanitizer builds) that the guard would forbid. A separate filter because
// libseccomp lets an unconditional allow (the list's write) override any
// narrower rule for the same call, and allows one comparison per argument
// in a rule; stacked filters return the strictest answer. An allow-list of
// fd numbers does not hold: a vCPU writes eventfds it creates when the
// guest activates a queue, after its filter exists. The kernel reads the
// fd as 32 bits, so the rule compares the low 32 bits. Loaded before the
// list, which has no `seccomp`.
std::expected<scmp_filter_ctx, int> build_image_guard(SeccompMode mode, const std::vector<int>& fds) {
  scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
  if (!ctx) return std::unexpected(ENOMEM);
  const uint32_t deny = mode == SeccompMode::Log ? SCMP_ACT_LOG : SCMP_ACT_TRAP;
  for (int fd : fds) {
    int rc = seccomp_rule_add(ctx, deny, SCMP_SYS(write), 1,
                              SCMP_A0(SCMP_CMP_MASKED_EQ, 0xffffffffu, static_cast<scmp_datum_t>(static_cast<uint32_t>(fd))));
    if (rc != 0) {
      seccomp_release(ctx);
      return std::unexpected(-rc);
    }
  }
  return ctx;
}

// The hidden test trigger's attempts on a disk image (mmap=KIND,
// write=KIND): what a thread taken over would do to rewrite an image
// without pwrite (a QCOW2 header naming another backing file).
void test_image_write(ThreadKind kind, const std::vector<std::string>& test, const std::vector<int>& fds) {
  std::string name = thread_kind_name(kind);
  for (const std::string& t : test) {
    const bool map = t == "mmap=" + name, write = t == "write=" + name;
    if (!map && !write) continue;
    if (fds.empty()) {
      std::fprintf(stderr, "tern: sandbox test: no image is open\n");
      continue;
    }
    const int fd = fds.front();
    std::fprintf(stderr, "tern: sandbox test: the %s thread %s image fd %d\n", name.c_str(),
                 map ? "maps (shared, writable)" : "writes to", fd);
    if (map) {
      void* p = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
      std::fprintf(stderr, "tern: sandbox test: %s mmap of image fd %d: %s\n", name.c_str(), fd,
                   p == MAP_FAILED ? errno_text(errno).c_str() : "mapped");
      if (p != MAP_FAILED) ::munmap(p, 4096);
    } else {
      // Zero bytes: the filter sees the call, the image stays as it is.
      ssize_t n = ::write(fd, "", 0);
      std::fprintf(stderr, "tern: sandbox test: %s write to image fd %d returned %zd\n", name.c_str(), fd, n);
    }
  }
}

// The hidden test trigger: a call the kind's filter forbids, once confined.
void test_forbidden_call(ThreadKind kind, const std::vector<std::string>& test) {
  std::string name = thread_kind_name(kind);
  bool wanted = false;
  for (const std::string& t : test) wanted = wanted || t == name;
  if (!wanted) return;
  std::fprintf(stderr, "tern: sandbox test: the %s thread makes a forbidden call\n", name.c_str());
  if (kind == ThreadKind::Vcpu) {
    // An ioctl number outside the vCPU's list, on no fd (EBADF if allowed).
    int r = ::ioctl(-1, KVM_CREATE_VM, 0);
    std::fprintf(stderr, "tern: sandbox test: vcpu ioctl KVM_CREATE_VM returned %d (%s)\n", r, errno_text(errno).c_str());
  } else {
    // An Internet socket: no thread of tern has a use for one.
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    std::fprintf(stderr, "tern: sandbox test: %s socket(AF_INET) returned %d\n", name.c_str(), fd);
    UniqueFd owned(fd);
  }
}

// The hidden test trigger's opens, removals and signals, by the main
// thread once in the Landlock domain.
void test_landlock(const State& s) {
  for (const std::string& p : s.test_opens) {
    UniqueFd fd(::open(p.c_str(), O_RDONLY | O_CLOEXEC));
    std::fprintf(stderr, "tern: sandbox test: open %s: %s\n", p.c_str(), fd ? "opened" : errno_text(errno).c_str());
  }
  for (const std::string& p : s.test_unlinks) {
    int r = ::unlink(p.c_str());
    std::fprintf(stderr, "tern: sandbox test: unlink %s: %s\n", p.c_str(), r == 0 ? "removed" : errno_text(errno).c_str());
  }
  for (pid_t pid : s.test_kills) {
    int r = ::kill(pid, 0);
    std::fprintf(stderr, "tern: sandbox test: kill %d: %s\n", static_cast<int>(pid),
                 r == 0 ? "delivered" : errno_text(errno).c_str());
  }
}

void hook(ThreadKind kind, std::stop_token stop) {
  State& s = g_state;
  {
    std::unique_lock lock(s.mutex);
    s.armed_cv.wait(lock, stop, [&] { return s.armed; });
    if (!s.armed) return;  // stopped during set-up: the thread only ends
  }
  t_kind_name = thread_kind_name(kind);
#if defined(__SANITIZE_ADDRESS__)
  // LeakSanitizer's check at exit stops every thread with clone and ptrace
  // and reads /proc/self/task: nothing a confined thread may do. It runs
  // now instead, before the main thread confines itself (then not again).
  if (kind == ThreadKind::Main) __lsan_do_leak_check();
#endif
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) die(kind, "PR_SET_NO_NEW_PRIVS", errno);
  if (s.ruleset && ::syscall(SYS_landlock_restrict_self, s.ruleset.get(), 0) != 0) {
    die(kind, "landlock_restrict_self", errno);
  }
  // The trigger's opens test Landlock alone: under the main filter openat
  // would not be reached at all.
  if (kind == ThreadKind::Main) test_landlock(s);
  if (s.seccomp != SeccompMode::Off && !s.image_fds.empty() && !writes_images(kind)) {
    auto guard = build_image_guard(s.seccomp, s.image_fds);
    if (!guard) die(kind, "building the image guard filter", guard.error());
    int rc = seccomp_load(*guard);
    seccomp_release(*guard);
    if (rc != 0) die(kind, "seccomp_load (image guard)", -rc);
  }
  if (s.seccomp != SeccompMode::Off) {
    auto filter = build_filter(kind, s.seccomp, s.pid);
    if (!filter) die(kind, "building the seccomp filter", filter.error());
    int rc = seccomp_load(*filter);
    seccomp_release(*filter);
    if (rc != 0) die(kind, "seccomp_load", -rc);
  }
  if (!s.test.empty()) {
    test_image_write(kind, s.test, s.image_fds);
    test_forbidden_call(kind, s.test);
  }
}

// ---- Landlock ----

struct RulesetAttr {  // struct landlock_ruleset_attr as of ABI 6
  uint64_t handled_access_fs;
  uint64_t handled_access_net;
  uint64_t scoped;
};

uint64_t fs_rights(int abi) {
  uint64_t all = (LANDLOCK_ACCESS_FS_MAKE_SYM << 1) - 1;  // ABI 1
  if (abi >= 2) all |= LANDLOCK_ACCESS_FS_REFER;
  if (abi >= 3) all |= LANDLOCK_ACCESS_FS_TRUNCATE;
  if (abi >= 5) all |= LANDLOCK_ACCESS_FS_IOCTL_DEV;
  return all;
}

constexpr uint64_t kFileRights = LANDLOCK_ACCESS_FS_EXECUTE | LANDLOCK_ACCESS_FS_WRITE_FILE |
                                 LANDLOCK_ACCESS_FS_READ_FILE | LANDLOCK_ACCESS_FS_TRUNCATE |
                                 LANDLOCK_ACCESS_FS_IOCTL_DEV;
constexpr uint64_t kRead = LANDLOCK_ACCESS_FS_READ_FILE | LANDLOCK_ACCESS_FS_READ_DIR;
constexpr uint64_t kWrite = LANDLOCK_ACCESS_FS_WRITE_FILE | LANDLOCK_ACCESS_FS_TRUNCATE |
                            LANDLOCK_ACCESS_FS_MAKE_REG | LANDLOCK_ACCESS_FS_REMOVE_FILE |
                            LANDLOCK_ACCESS_FS_MAKE_DIR | LANDLOCK_ACCESS_FS_REMOVE_DIR |
                            LANDLOCK_ACCESS_FS_MAKE_SOCK;

std::expected<void, std::string> add_path_rule(int ruleset, int abi, const std::string& path, uint64_t access,
                                               const std::string& why) {
  UniqueFd fd(::open(path.c_str(), O_PATH | O_CLOEXEC));
  if (!fd) return Unexpected("Landlock rule for " + why + " " + path + ": " + errno_text(errno));
  struct stat st{};
  if (::fstat(fd.get(), &st) != 0) return Unexpected("Landlock rule for " + why + " " + path + ": " + errno_text(errno));
  access &= fs_rights(abi);
  if (!S_ISDIR(st.st_mode)) access &= kFileRights;
  landlock_path_beneath_attr attr{};
  attr.allowed_access = access;
  attr.parent_fd = fd.get();
  if (::syscall(SYS_landlock_add_rule, ruleset, LANDLOCK_RULE_PATH_BENEATH, &attr, 0) != 0) {
    return Unexpected("Landlock rule for " + why + " " + path + ": " + errno_text(errno));
  }
  return {};
}

std::string directory_of(const std::string& path) {
  auto slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

// The files under a QCOW2 disk, top first, by the block layer's rules
// (block/chain.h, walk_backing_chain): only regular files are read (and
// block devices where the disk allows them; never a FIFO, which would
// block), a backing file recorded as raw ends the chain
// (its bytes are a guest's, never a header), and the depth limit holds.
// The block layer opened this chain during set-up by the same rules; a
// walk that stops early met a file that changed since, and what met the
// rules above it is granted, nothing below.
std::vector<std::string> backing_chain(const DiskConfig& d) {
  block::BackingWalk walk;
  walk.image = d.open.path;
  walk.allow_block_device = d.open.allow_block_backing;
  std::vector<block::BackingFile> files;
  (void)block::walk_backing_chain(walk, files);
  std::vector<std::string> chain;
  for (const auto& f : files) chain.push_back(f.path);
  return chain;
}

// Signal scoping: no confined thread signals a process outside its
// domain (the SIGIO of a descriptor's owner setting included; seccomp
// already keeps tgkill inside this process). Every thread restricts
// itself, so each has a domain of its own; until Landlock's erratum 2 was
// fixed, scoping also stopped signals between threads of one process in
// different domains, and a vCPU could no longer be kicked. So only where
// the kernel reports that fix (LANDLOCK_CREATE_RULESET_ERRATA, bit 1).
bool signal_scoping(int abi) {
  if (abi < 6) return false;
  long errata = ::syscall(SYS_landlock_create_ruleset, nullptr, 0, LANDLOCK_CREATE_RULESET_ERRATA);
  return errata > 0 && (errata & (1L << 1)) != 0;
}

// Landlock rules cover the whole tree beneath a directory, so the right
// to remove the API socket at exit is a right to remove any file below
// its directory. It is granted only for a directory that is the user's,
// writable by nobody else and holds nothing but the socket; the reason
// it is not otherwise.
std::optional<std::string> not_own_directory(const std::string& dir, const std::string& socket_name) {
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0) return errno_text(errno);
  if (st.st_uid != ::geteuid()) return "is not yours";
  if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0) return "is writable by others";
  DIR* d = ::opendir(dir.c_str());
  if (!d) return errno_text(errno);
  std::optional<std::string> why;
  while (const dirent* e = ::readdir(d)) {
    std::string_view name = e->d_name;
    if (name != "." && name != ".." && name != socket_name) {
      why = "holds more than the socket (" + std::string(name) + ")";
      break;
    }
  }
  ::closedir(d);
  return why;
}

std::expected<UniqueFd, std::string> build_ruleset(const VmConfig& config, int abi) {
  RulesetAttr attr{};
  attr.handled_access_fs = fs_rights(abi);
  size_t size = sizeof attr.handled_access_fs;
  if (abi >= 4) {
    // No TCP at all: nothing in tern binds or connects one.
    attr.handled_access_net = LANDLOCK_ACCESS_NET_BIND_TCP | LANDLOCK_ACCESS_NET_CONNECT_TCP;
    size = offsetof(RulesetAttr, scoped);
  }
  if (abi >= 6) {
    attr.scoped = LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET;  // no abstract sockets outside tern
    if (signal_scoping(abi)) attr.scoped |= LANDLOCK_SCOPE_SIGNAL;
    size = sizeof attr;
  }
  if ((attr.scoped & LANDLOCK_SCOPE_SIGNAL) == 0) {
    std::fprintf(stderr,
                 "tern: Landlock: no signal scoping on this kernel (ABI %d%s): a confined thread's signals are "
                 "limited by seccomp alone\n",
                 abi, abi >= 6 ? ", without the fix for erratum 2" : "");
  }
  long fd = ::syscall(SYS_landlock_create_ruleset, &attr, size, 0);
  if (fd < 0) return Unexpected(std::string("landlock_create_ruleset: ") + errno_text(errno));
  UniqueFd ruleset(static_cast<int>(fd));
  const int r = ruleset.get();
  for (const DiskConfig& d : config.disks) {
    uint64_t access = LANDLOCK_ACCESS_FS_READ_FILE;
    if (!d.open.read_only) access |= LANDLOCK_ACCESS_FS_WRITE_FILE | LANDLOCK_ACCESS_FS_TRUNCATE;
    if (auto ok = add_path_rule(r, abi, d.open.path, access, "--disk " + d.device.id); !ok) return Unexpected(ok.error());
    // Only a header the user vouched for (image_type=qcow2) names files:
    // a raw disk's first bytes are the guest's, and a probed header may be
    // too (the block layer refuses its backing file; docs/SECURITY.md,
    // "Probed images").
    if (!d.open.allow_backing || d.open.type != block::ImageType::Qcow2) continue;
    for (const std::string& backing : backing_chain(d)) {
      auto ok = add_path_rule(r, abi, backing, LANDLOCK_ACCESS_FS_READ_FILE, "--disk " + d.device.id + " backing file");
      if (!ok) return Unexpected(ok.error());
    }
  }
  if (config.api_socket) {
    // Created before the sandbox; removed at exit where its directory is
    // tern's own (not_own_directory). Elsewhere it stays, and the next
    // start replaces it (api/http_beast.cpp removes a socket nobody
    // listens on).
    const std::string& path = *config.api_socket;
    const std::string dir = directory_of(path);
    if (auto why = not_own_directory(dir, path.substr(path.rfind('/') + 1))) {
      std::fprintf(stderr,
                   "tern: Landlock: the API socket's directory %s %s: the socket stays at exit (the next start "
                   "replaces it); give it a directory of its own to have it removed\n",
                   dir.c_str(), why->c_str());
    } else {
      uint64_t access = LANDLOCK_ACCESS_FS_MAKE_SOCK | LANDLOCK_ACCESS_FS_REMOVE_FILE;
      auto ok = add_path_rule(r, abi, dir, access, "--api-socket directory");
      if (!ok) return Unexpected(ok.error());
    }
  }
  for (const LandlockRule& rule : config.sandbox.rules) {
    auto ok = add_path_rule(r, abi, rule.path, rule.writable ? kRead | kWrite : kRead, "--landlock-rules");
    if (!ok) return Unexpected(ok.error());
  }
  return ruleset;
}

// A kernel without seccomp filters (no CONFIG_SECCOMP_FILTER), or
// without the log action for --seccomp log, is found by prepare(), before
// set-up, not by the first thread that loads its filter. The probe is
// libseccomp's: installing a filter from a null program fails with
// EFAULT where filters exist (EINVAL or ENOSYS where they do not);
// prctl() where seccomp() is missing (before Linux 3.17).
std::expected<void, std::string> check_seccomp(SeccompMode mode) {
  const char* option = mode == SeccompMode::Log ? "--seccomp log" : "--seccomp true";
  long r = ::syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, nullptr);
  int err = errno;
  if (r != 0 && err == ENOSYS) {
    r = ::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, nullptr, 0, 0);
    err = errno;
  }
  if (r == 0 || err != EFAULT) {
    return Unexpected(std::string(option) + ": this kernel offers no seccomp filters (" + errno_text(r == 0 ? 0 : err) +
                      "); --seccomp false runs without them");
  }
  if (mode == SeccompMode::Log) {
    uint32_t action = SECCOMP_RET_LOG;
    if (::syscall(SYS_seccomp, SECCOMP_GET_ACTION_AVAIL, 0, &action) != 0) {
      return Unexpected(std::string(option) + ": this kernel cannot log system calls (" + errno_text(errno) + ")");
    }
  }
  return {};
}

}  // namespace

int landlock_abi() {
  long abi = ::syscall(SYS_landlock_create_ruleset, nullptr, 0, LANDLOCK_CREATE_RULESET_VERSION);
  return abi < 0 ? 0 : static_cast<int>(abi);
}

std::vector<std::string_view> allowed_syscalls(ThreadKind kind) {
  std::vector<std::string_view> out;
  for (const Allow& a : full_list(kind)) {
    bool seen = false;
    for (std::string_view s : out) seen = seen || s == a.name;
    if (!seen) out.push_back(a.name);
  }
  return out;
}

std::expected<std::unique_ptr<Sandbox>, std::string> Sandbox::prepare(const VmConfig& config) {
  const SandboxConfig& c = config.sandbox;
  bool landlock = false;
  if (c.landlock != LandlockMode::Off) {
    int abi = landlock_abi();
    if (abi > 0) {
      landlock = true;
    } else if (c.landlock == LandlockMode::On) {
      return Unexpected("--landlock true: this kernel offers no Landlock (" + errno_text(errno) + ")");
    } else {
      std::fprintf(stderr, "tern: Landlock: not offered by this kernel (%s); files are not confined\n",
                   errno_text(errno).c_str());
    }
  }
  if (c.seccomp == SeccompMode::Off && !landlock) return std::unique_ptr<Sandbox>();
  State& state = g_state;
  if (state.prepared) return Unexpected("sandbox: prepared twice");

  if (c.seccomp != SeccompMode::Off) {
    if (auto ok = check_seccomp(c.seccomp); !ok) return Unexpected(ok.error());
    // Every filter once now, so that a bad list fails here and not in a thread.
    for (size_t k = 0; k < kThreadKindCount; ++k) {
      auto f = build_filter(static_cast<ThreadKind>(k), c.seccomp, ::getpid());
      if (!f) {
        return Unexpected(std::string("seccomp filter for the ") + thread_kind_name(static_cast<ThreadKind>(k)) +
                          " thread: " + errno_text(f.error()));
      }
      seccomp_release(*f);
    }
    for (int nr = 0; nr < kMaxSyscall; ++nr) {
      if (char* name = seccomp_syscall_resolve_num_arch(SCMP_ARCH_NATIVE, nr)) {
        std::snprintf(g_names[nr].data(), g_names[nr].size(), "%s", name);
        std::free(name);
      }
    }
    struct sigaction sa{};
    sa.sa_sigaction = on_sigsys;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    if (c.seccomp == SeccompMode::Kill && ::sigaction(SIGSYS, &sa, nullptr) != 0) {
      return Unexpected("sigaction(SIGSYS): " + errno_text(errno));
    }
    if (c.seccomp == SeccompMode::Log) {
      std::fprintf(stderr,
                   "tern: --seccomp log: forbidden system calls are let through and logged by the kernel "
                   "(audit type=1326 in dmesg)\n");
    }
  }
  // glibc's malloc reads /sys/devices/system/cpu/online and /proc/stat
  // the first time a thread needs an arena of its own, unless the arena
  // limit is set: set it to glibc's own default (8 per CPU on 64-bit), so
  // that no confined thread has to open a file to allocate memory.
  ::mallopt(M_ARENA_MAX, 8 * std::max(1, ::get_nprocs()));
  state.prepared = true;
  state.seccomp = c.seccomp;
  state.landlock = landlock;
  state.test = c.test;
  state.pid = ::getpid();
  for (const std::string& t : c.test) {
    if (!t.starts_with("open=")) continue;
    if (state.test_opens.empty()) {
      state.test_opens.push_back("/etc/passwd");
      for (const DiskConfig& d : config.disks) state.test_opens.push_back(d.open.path);
    }
    state.test_opens.push_back(t.substr(5));
  }
  for (const std::string& t : c.test) {
    if (t.starts_with("unlink=")) state.test_unlinks.push_back(t.substr(7));
    if (t.starts_with("kill=")) state.test_kills.push_back(static_cast<pid_t>(std::atoi(t.c_str() + 5)));
  }
  set_thread_sandbox_hook(hook);
  return std::unique_ptr<Sandbox>(new Sandbox(config));
}

std::expected<void, std::string> Sandbox::arm(std::vector<int> image_fds) {
  State& s = g_state;
  UniqueFd ruleset;
  if (s.landlock) {
    auto built = build_ruleset(config_, landlock_abi());
    if (!built) return Unexpected(built.error());
    ruleset = std::move(*built);
  }
  {
    std::lock_guard lock(s.mutex);
    s.ruleset = std::move(ruleset);
    s.image_fds = std::move(image_fds);
    s.armed = true;
  }
  s.armed_cv.notify_all();
  return {};
}

Sandbox::~Sandbox() {
  set_thread_sandbox_hook(nullptr);
  // Threads stopped while waiting for arm() end unconfined.
  g_state.armed_cv.notify_all();
}

}  // namespace tern::vmm

// The slow tests (label `linux`): Debian's cloud kernel (scripts/make-guest.sh)
// boots under build/tern with `console=ttyS0` and a marker on its command
// line, and the kernel's own serial lines prove it accepted tern's
// boot_params (command line echoed), e820 map (the exact entries tern
// built), ACPI tables (RSDP, XSDT, MADT found) and vCPU count.
//
// Under a nested, software-emulated KVM (kvm_pvm) the kernel runs at a few
// million instructions per second, so each test stops tern as soon as every
// expected line was seen, or after its timeout, and asserts on what arrived.
// Two kernels: the same kernel decompressed (build/guest/vmlinux, an ELF64
// entered at its 64-bit entry) all the way to init, and the bzImage through
// the 64-bit boot protocol (its own decompressor costs about two minutes
// there, so it gets TERN_LINUX_BZIMAGE_TIMEOUT, default 480 s) up to SMP.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "arch/x86_64/boot_setup.h"
#include "tests/support/support.h"

namespace {

using tern::test_support::build_dir;
using tern::test_support::emulated_kvm;
using tern::test_support::source_dir;

struct BootRun {
  std::string out;
  std::vector<std::pair<double, std::string>> lines;  // (seconds since start, line)
  int status = -1;    // exit status, or -1 when the test stopped tern
  double seconds = 0;
};

// Runs argv, collecting stdout+stderr line by line, until it exits, `done`
// says every expected line was seen, or `timeout_s` passes; then kills it.
BootRun run_until(const std::vector<std::string>& argv, int timeout_s,
              const std::function<bool(const std::string&)>& done) {
  BootRun r;
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return r;
  pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(fds[1], 1);
    ::dup2(fds[1], 2);
    std::vector<char*> args;
    for (auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  ::close(fds[1]);
  auto t0 = std::chrono::steady_clock::now();
  auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); };
  std::string partial;
  bool finished = false, stopped = false;
  while (!finished) {
    double left = timeout_s - elapsed();
    if (left <= 0) break;
    pollfd p{fds[0], POLLIN, 0};
    int n = ::poll(&p, 1, static_cast<int>(left * 1000) + 1);
    if (n <= 0) continue;
    char buf[4096];
    ssize_t got = ::read(fds[0], buf, sizeof buf);
    if (got <= 0) {
      finished = true;
      break;
    }
    r.out.append(buf, static_cast<size_t>(got));
    partial.append(buf, static_cast<size_t>(got));
    size_t nl;
    while ((nl = partial.find('\n')) != std::string::npos) {
      r.lines.emplace_back(elapsed(), partial.substr(0, nl));
      partial.erase(0, nl + 1);
    }
    if (done(r.out)) {
      stopped = true;
      break;
    }
  }
  if (!finished) {
    ::kill(pid, SIGKILL);
    stopped = true;
  }
  int st = 0;
  ::waitpid(pid, &st, 0);
  ::close(fds[0]);
  r.seconds = elapsed();
  if (!stopped && WIFEXITED(st)) r.status = WEXITSTATUS(st);
  if (!partial.empty()) r.lines.emplace_back(elapsed(), partial);
  return r;
}

int timeout_s(const char* var, int fallback) {
  const char* t = std::getenv(var);
  return t ? std::atoi(t) : fallback;
}

std::string hex16(uint64_t v) {
  char b[32];
  std::snprintf(b, sizeof b, "0x%016llx", static_cast<unsigned long long>(v));
  return b;
}

// The kernel's own rendering of one e820 entry (arch/x86/kernel/e820.c).
std::string e820_line(const tern::arch::x86_64::E820Entry& e) {
  return "BIOS-e820: [mem " + hex16(e.addr) + "-" + hex16(e.addr + e.size - 1) + "] " +
         (e.type == tern::arch::x86_64::E820Type::Ram ? "usable" : "reserved");
}

class LinuxBoot : public ::testing::Test {
 protected:
  void SetUp() override {
    TERN_REQUIRE_KVM();
    // The guest comes from Debian's packages; failing to build it fails the test.
    std::string cmd = "bash " + source_dir() + "/scripts/make-guest.sh 2>&1";
    FILE* p = ::popen(cmd.c_str(), "r");
    ASSERT_NE(p, nullptr);
    char buf[512];
    std::string out;
    while (std::fgets(buf, sizeof buf, p)) out += buf;
    int st = ::pclose(p);
    ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << "scripts/make-guest.sh failed:\n" << out;
  }
};

// Boots `kernel` with a plain user command line (tern's CPU profile and
// emulation fallback do the rest on an emulated KVM) and checks that the
// kernel accepted tern's machine, then every line of `more`.
BootRun boot_and_expect(const std::string& kernel, int timeout, const std::vector<std::string>& more) {
  constexpr uint64_t kMemory = 512ull << 20;
  const std::string marker = "tern.marker=m" + std::to_string(::getpid());
  const std::string cmdline = "console=ttyS0 panic=-1 " + marker;
  std::vector<std::string> expected{"Command line: " + cmdline};
  for (const auto& e : tern::arch::x86_64::make_e820(kMemory)) expected.push_back(e820_line(e));
  expected.push_back("ACPI: RSDP 0x00000000000E0000");
  expected.push_back("ACPI: XSDT 0x");
  expected.push_back("ACPI: APIC 0x");
  expected.push_back("ACPI: Using ACPI (MADT) for SMP configuration information");
  expected.push_back("smpboot: Allowing 2 CPUs, 0 hotplug CPUs");
  expected.insert(expected.end(), more.begin(), more.end());
  auto all_seen = [&](const std::string& out) {
    for (auto& e : expected) {
      if (out.find(e) == std::string::npos) return false;
    }
    return true;
  };
  BootRun r = run_until({build_dir() + "/tern", "--kernel", kernel, "--initramfs",
                         build_dir() + "/guest/initramfs.cpio.gz", "--cmdline", cmdline, "--cpus", "boot=2",
                         "--memory", "size=512M", "--serial", "tty"},
                        timeout, all_seen);
  for (auto& [t, l] : r.lines) std::printf("[%7.2f s] %s\n", t, l.c_str());
  std::printf("[linux boot %s: %zu lines in %.1f s, exit status %d (-1: stopped by the test)]\n", kernel.c_str(),
              r.lines.size(), r.seconds, r.status);
  for (auto& e : expected) EXPECT_NE(r.out.find(e), std::string::npos) << "missing kernel line: " << e;
  // Nothing else in the e820 map.
  size_t e820_lines = 0;
  for (auto& [t, l] : r.lines) e820_lines += l.find("BIOS-e820:") != std::string::npos;
  EXPECT_EQ(e820_lines, tern::arch::x86_64::make_e820(kMemory).size());
  EXPECT_EQ(r.out.find("tern: vCPU"), std::string::npos) << "tern reported a vCPU failure";
  return r;
}

// Debian's stock kernel, decompressed, to "Run /init as init process" with
// both vCPUs up, from `console=ttyS0` alone. About 16 minutes on an emulated
// KVM (TERN_LINUX_INIT_TIMEOUT, default 1800 s), seconds on hardware.
TEST_F(LinuxBoot, StockKernelReachesInitWithBothCpus) {
  std::vector<std::string> more{"smp: Brought up 1 node, 2 CPUs", "Run /init as init process"};
  if (emulated_kvm()) {
    // tern's emulated profile: the one line saying so, the parameter it adds,
    // and the kernel past the alternatives' int3 self-test.
    more.push_back("tern: KVM here runs the guest kernel in its instruction emulator");
    more.push_back(" cryptomgr.notests");
  }
  BootRun r = boot_and_expect(build_dir() + "/guest/vmlinux", timeout_s("TERN_LINUX_INIT_TIMEOUT", 1800), more);
  if (emulated_kvm()) {
    EXPECT_EQ(r.out.find("x86/fpu: Supporting XSAVE"), std::string::npos) << "XSAVE must be hidden here";
  } else {
    EXPECT_EQ(r.out.find("WARNING:"), std::string::npos) << "a kernel warning on a real KVM";
  }
}

TEST_F(LinuxBoot, BzImageAcceptsBootParamsE820AcpiAndCpus) {
  // On the emulated host the bzImage's own decompressor alone costs minutes
  // of CI time, and the vmlinux above is that host's one stock-kernel boot;
  // the lab (label lab, a real KVM) boots the bzImage in seconds, and so do
  // the Linux disk tests there. TERN_LINUX_BZIMAGE=1 runs it here anyway.
  if (emulated_kvm() && std::getenv("TERN_LINUX_BZIMAGE") == nullptr) {
    GTEST_SKIP() << "emulated KVM: the bzImage boot runs in the lab (label lab); TERN_LINUX_BZIMAGE=1 forces it";
  }
  boot_and_expect(build_dir() + "/guest/bzImage", timeout_s("TERN_LINUX_BZIMAGE_TIMEOUT", 480), {});
}

}  // namespace

// Running a Linux guest under build/tern from a test (label `linux`): tern
// runs in the background with its console in a file; the test waits for the
// guest's own lines (events, never fixed sleeps), talks to the API, and
// collects the exit status. Shared by the small-kernel tests.
#pragma once

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/support.h"

namespace tern::linux_test {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

using tern::test_support::build_dir;
using tern::test_support::sh;
using tern::test_support::Shell;
using tern::test_support::emulated_kvm;
using tern::test_support::source_dir;
inline int env_int(const char* var, int fallback) {
  const char* v = std::getenv(var);
  return v ? std::atoi(v) : fallback;
}


// On a real KVM tern hands the guest nothing it should warn about (CPUID,
// ACPI, devices): any kernel warning or oops fails the test, and so does
// tern choosing the emulated CPU profile.
inline void expect_clean_kernel_log(const std::string& console, const std::string& tern_log) {
  EXPECT_EQ(console.find("WARNING:"), std::string::npos) << "a kernel warning";
  EXPECT_EQ(console.find("cut here"), std::string::npos) << "a kernel warning";
  EXPECT_EQ(console.find("---[ end trace"), std::string::npos) << "a kernel oops or warning";
  EXPECT_EQ(tern_log.find("emulator"), std::string::npos) << "tern chose the emulated profile";
}

inline void expect_qcow2_check_clean(const std::string& path) {
  Shell r = sh("qemu-img check " + path);
  EXPECT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("No errors were found on the image."), std::string::npos) << r.out;
}

inline std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(f)), {});
}

// One tern process: console to `serial`, tern's own stdout/stderr to `log`.
class TernRun {
 public:
  TernRun() = default;
  TernRun(const TernRun&) = delete;
  TernRun& operator=(const TernRun&) = delete;
  ~TernRun() { kill(); }

  void start(const std::vector<std::string>& args, const std::string& serial, const std::string& log) {
    serial_ = serial;
    log_ = log;
    std::vector<std::string> argv{build_dir() + "/tern"};
    argv.insert(argv.end(), args.begin(), args.end());
    argv.push_back("--serial");
    argv.push_back("file=" + serial);
    command_.clear();
    for (auto& a : argv) command_ += (command_.empty() ? "" : " ") + a;
    t0_ = Clock::now();
    pid_ = ::fork();
    if (pid_ == 0) {
      int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
      if (fd >= 0) {
        ::dup2(fd, 1);
        ::dup2(fd, 2);
      }
      std::vector<char*> c;
      for (auto& a : argv) c.push_back(const_cast<char*>(a.c_str()));
      c.push_back(nullptr);
      ::execv(c[0], c.data());
      ::_exit(127);
    }
  }

  double seconds() const { return std::chrono::duration<double>(Clock::now() - t0_).count(); }
  std::string console() const { return slurp(serial_); }
  std::string log() const { return slurp(log_); }
  const std::string& command() const { return command_; }
  bool running() {
    reap(false);
    return pid_ > 0;
  }
  int status() const { return status_; }

  // Waits until `text` is on the console; false when tern exited first or
  // `limit` passed. Records when it was seen.
  bool wait_for(const std::string& text, std::chrono::seconds limit) {
    auto end = Clock::now() + limit;
    for (;;) {
      if (console().find(text) != std::string::npos) {
        std::printf("[%7.1f s] seen: %s\n", seconds(), text.c_str());
        return true;
      }
      if (!running()) {
        // The last bytes may have landed just before the exit.
        if (console().find(text) != std::string::npos) return true;
        std::printf("[%7.1f s] tern exited (status %d) before: %s\n", seconds(), status_, text.c_str());
        return false;
      }
      if (Clock::now() >= end) {
        std::printf("[%7.1f s] timed out waiting for: %s\n", seconds(), text.c_str());
        return false;
      }
      std::this_thread::sleep_for(100ms);
    }
  }

  // Waits for tern to exit; its exit status, or -1 after `limit` (tern is
  // then killed).
  int wait_exit(std::chrono::seconds limit) {
    auto end = Clock::now() + limit;
    while (running()) {
      if (Clock::now() >= end) {
        std::printf("[%7.1f s] tern still running after the limit; killing it\n", seconds());
        kill();
        return -1;
      }
      std::this_thread::sleep_for(100ms);
    }
    std::printf("[%7.1f s] tern exited with status %d\n", seconds(), status_);
    return status_;
  }

  void kill() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
      pid_ = -1;
    }
  }

  // The console and tern's log, for a failure message.
  std::string report() const {
    return "command: " + command_ + "\n--- console ---\n" + console() + "\n--- tern ---\n" + log();
  }

 private:
  void reap(bool block) {
    if (pid_ <= 0) return;
    int st = 0;
    if (::waitpid(pid_, &st, block ? 0 : WNOHANG) == pid_) {
      pid_ = -1;
      status_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    }
  }

  pid_t pid_ = -1;
  int status_ = -1;
  std::string serial_, log_, command_;
  Clock::time_point t0_;
};

}  // namespace tern::linux_test

// What the project's tests share: where the build and source trees are,
// temporary directories, running a shell command, and whether KVM is here.
// One implementation each (tests/support/support.cpp), for every suite.
#pragma once

#include <filesystem>
#include <string>

namespace tern::test_support {

// The build directory (TERN_BUILD_DIR, which ctest sets; "build" run by
// hand from the source tree) and the source tree (TERN_SOURCE_DIR, or ".").
std::string build_dir();
std::string source_dir();
std::string build_path(const std::string& relative);
std::string source_path(const std::string& relative);

// A fresh directory, removed with everything in it when the object goes.
// Under the build directory when it is known: a real disk, where O_DIRECT
// works (unlike a tmpfs /tmp).
class TempDir {
 public:
  explicit TempDir(const std::string& prefix = "tern-test");
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// Runs `cmd` with /bin/sh; its exit status (128 + signal when killed, -1
// when it could not start) and its stdout and stderr, interleaved as
// written.
struct Shell {
  int status = -1;
  std::string out;
};
Shell sh(const std::string& cmd);
// The same, keeping the output in *output: the form for
// EXPECT_EQ(sh(cmd, &out), 0) << out.
int sh(const std::string& cmd, std::string* output);

// Whether /dev/kvm exists; KVM tests skip, saying so, where it does not.
bool kvm_available();
// This project's emulated CI host (kvm_pvm): an instruction emulator where
// only the small kernel and a 32-bit user space run (docs/vmm.md).
bool emulated_kvm();
// The CPU that runs KVM's guests is QEMU's TCG (scripts/lab.sh's outer VM),
// where a few architectural corners differ from hardware.
bool host_cpu_is_qemu_tcg();

}  // namespace tern::test_support

// In a test or SetUp(): skips, saying why, where there is no /dev/kvm.
#define TERN_REQUIRE_KVM()                                               \
  do {                                                                   \
    if (!::tern::test_support::kvm_available()) GTEST_SKIP() << "/dev/kvm absent"; \
  } while (0)

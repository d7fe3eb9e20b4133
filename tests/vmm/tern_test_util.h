// Running build/tern from a test: the command's status and its output.
#pragma once

#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <string>

namespace tern::testing {

// The CPU that runs KVM's guests is QEMU's TCG (scripts/lab.sh's outer VM),
// where a few architectural corners differ from hardware.
inline bool host_cpu_is_qemu_tcg() {
  FILE* f = std::fopen("/proc/cpuinfo", "r");
  if (!f) return false;
  char line[512];
  bool tcg = false;
  while (!tcg && std::fgets(line, sizeof line, f)) tcg = std::string(line).find("QEMU TCG CPU") != std::string::npos;
  std::fclose(f);
  return tcg;
}

inline std::string build_dir() {
  const char* b = std::getenv("TERN_BUILD_DIR");
  return b ? b : "build";
}

struct Shell {
  int status = -1;
  std::string out;  // stdout then stderr, interleaved as written
};

inline Shell sh(const std::string& cmd) {
  Shell r;
  FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  int st = ::pclose(p);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  return r;
}

}  // namespace tern::testing

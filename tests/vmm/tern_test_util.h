// Running build/tern from a test: the command's status and its output.
#pragma once

#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <string>

namespace tern::testing {

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

#include "tests/support/support.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <system_error>

namespace tern::test_support {

std::string build_dir() {
  const char* b = std::getenv("TERN_BUILD_DIR");
  return b ? b : "build";
}

std::string source_dir() {
  const char* s = std::getenv("TERN_SOURCE_DIR");
  return s ? s : ".";
}

std::string build_path(const std::string& relative) { return build_dir() + "/" + relative; }
std::string source_path(const std::string& relative) { return source_dir() + "/" + relative; }

TempDir::TempDir(const std::string& prefix) {
  std::filesystem::path base = std::filesystem::temp_directory_path();
  if (std::getenv("TERN_BUILD_DIR")) {
    base = std::filesystem::path(build_dir()) / "tmp";
    std::filesystem::create_directories(base);
  }
  std::string tmpl = (base / (prefix + "-XXXXXX")).string();
  if (::mkdtemp(tmpl.data()) == nullptr) throw std::system_error(errno, std::generic_category(), "mkdtemp " + tmpl);
  path_ = tmpl;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

Shell sh(const std::string& cmd) {
  Shell r;
  FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  int st = ::pclose(p);
  if (st == -1) return r;
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  return r;
}

int sh(const std::string& cmd, std::string* output) {
  Shell r = sh(cmd);
  if (output) *output = std::move(r.out);
  return r.status;
}

bool kvm_available() { return ::access("/dev/kvm", F_OK) == 0; }

bool emulated_kvm() { return ::access("/sys/module/kvm_pvm", F_OK) == 0; }

bool host_cpu_is_qemu_tcg() {
  FILE* f = std::fopen("/proc/cpuinfo", "r");
  if (!f) return false;
  char line[512];
  bool tcg = false;
  while (!tcg && std::fgets(line, sizeof line, f)) tcg = std::string(line).find("QEMU TCG CPU") != std::string::npos;
  std::fclose(f);
  return tcg;
}

}  // namespace tern::test_support

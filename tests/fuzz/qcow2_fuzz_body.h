// The QCOW2 fuzz body, shared by the libFuzzer target and the regression
// test that replays its findings (tests/fuzz/regressions/) in every build.
#pragma once

#include <fcntl.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "base/unique_fd.h"
#include "block/qcow2/engine.h"
#include "block/qcow2/host_file.h"

namespace tern::block::qcow2::fuzz {

inline std::unique_ptr<HostFile> memfile(const uint8_t* data, size_t size) {
  int fd = ::memfd_create("qcow2-fuzz", MFD_CLOEXEC);
  if (fd < 0) return nullptr;
  tern::UniqueFd owned(fd);
  size_t done = 0;
  while (done < size) {
    ssize_t n = ::write(fd, data + done, size - done);
    if (n <= 0) return nullptr;
    done += static_cast<size_t>(n);
  }
  return std::make_unique<FdHostFile>(std::move(owned));
}

inline void exercise(const uint8_t* data, size_t size, bool writable) {
  auto file = memfile(data, size);
  if (!file) return;
  EngineOptions o;
  o.read_only = !writable;
  o.allow_backing = false;  // never follow names from the input to real files
  o.l2_cache_bytes = 256 << 10;
  o.refcount_cache_bytes = 64 << 10;
  o.warn = [](const std::string&) {};
  auto engine = Engine::open(std::move(file), "fuzz.qcow2", o);
  if (!engine) return;
  Engine& e = **engine;
  std::vector<uint8_t> buf(64 << 10);
  iovec v{buf.data(), buf.size()};
  std::span<const iovec> iov(&v, 1);
  const uint64_t disk = e.size();
  // A few reads spread over the disk, at offsets the input chooses.
  for (uint64_t k = 0; k < 8 && disk >= buf.size(); ++k) {
    uint64_t pick = size > k ? data[size - 1 - k] : k;
    uint64_t offset = (disk - buf.size()) / 255 * pick / 512 * 512;
    (void)e.read(offset, iov, nullptr);
  }
  if (writable && disk >= buf.size()) {
    std::fill(buf.begin(), buf.end(), 0xa5);
    (void)e.write(0, iov, nullptr);
    (void)e.write_zeroes(disk / 2 / 512 * 512, 4096, true);
    (void)e.discard(0, 65536);
    (void)e.check(Repair::None);
    (void)e.close();
  }
}

// The dirty-image path: the same image with the dirty bit set (and the
// corrupt bit cleared) is opened writable, which rebuilds every refcount
// from the L1/L2 tables before anything else (docs/qcow2.md). Then it is
// used, closed and reopened.
inline void exercise_dirty(const uint8_t* data, size_t size) {
  if (size < 104) return;
  std::vector<uint8_t> image(data, data + size);
  // Version 3 only: v2 has no feature bits and is never rebuilt.
  image[4] = image[5] = image[6] = 0;
  image[7] = 3;
  image[79] = static_cast<uint8_t>((image[79] | 1) & ~2);  // dirty on, corrupt off
  exercise(image.data(), image.size(), true);
  exercise(image.data(), image.size(), false);
}

// Separates the images of a backing-chain input.
inline constexpr std::string_view kChainSeparator = "TERNBACK";

// The directory the backing-chain images of this process live in.
inline const std::string& chain_dir() {
  static std::string dir = [] {
    std::string base = ::access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    std::string templ = base + "/tern-qcow2-fuzz-XXXXXX";
    if (!::mkdtemp(templ.data())) std::abort();
    return templ;
  }();
  static const bool cleanup = std::atexit([] {
    for (const char* f : {"/0", "/1", "/2"}) ::unlink((chain_dir() + f).c_str());
    ::rmdir(chain_dir().c_str());
  }) == 0;
  (void)cleanup;
  return dir;
}

// Backing chains: the input is up to three images separated by
// kChainSeparator, written to files "0", "1" and "2" of a private
// directory. A backing file name in a QCOW2 header is replaced by one of a
// few names inside that directory (chosen by its first byte), so the chain
// may name itself, loop, go missing or point at a raw file, but never leaves
// the directory; a name that cannot be replaced is removed. Image "0" is
// then opened with backing files allowed, read, written (copy-on-write from
// the backing file) and checked.
inline void exercise_backing(const uint8_t* data, size_t size) {
  const std::string& dir = chain_dir();
  std::string_view all(reinterpret_cast<const char*>(data), size);
  std::vector<std::string> parts;
  while (parts.size() < 3) {
    size_t at = parts.size() < 2 ? all.find(kChainSeparator) : std::string_view::npos;
    parts.emplace_back(all.substr(0, at));
    if (at == std::string_view::npos) break;
    all.remove_prefix(at + kChainSeparator.size());
  }
  const std::string names[] = {"0", "1", "2", "./1", dir + "/2", "missing", "missing/../0"};
  for (size_t i = 0; i < 3; ++i) {
    std::string path = dir + "/" + std::to_string(i);
    ::unlink(path.c_str());
    if (i >= parts.size()) continue;
    std::string& img = parts[i];
    if (img.size() >= 72 && img.compare(0, 4, "QFI\xfb") == 0) {
      auto be64 = [&](size_t at) {
        uint64_t v = 0;
        for (size_t k = 0; k < 8; ++k) v = v << 8 | static_cast<uint8_t>(img[at + k]);
        return v;
      };
      uint64_t offset = be64(8);
      uint32_t len = static_cast<uint32_t>(be64(16) >> 32);
      if (offset != 0 || len != 0) {
        bool patched = false;
        if (offset >= 72 && offset < img.size()) {
          uint8_t sel = static_cast<uint8_t>(img[offset]);
          const std::string& name =
              sel >= '0' && sel <= '2' ? names[sel - '0'] : names[sel % std::size(names)];
          if (name.size() <= img.size() - offset) {
            std::memcpy(img.data() + offset, name.data(), name.size());
            uint32_t n = static_cast<uint32_t>(name.size());
            for (size_t k = 0; k < 4; ++k) img[16 + k] = static_cast<char>(n >> (24 - 8 * k));
            patched = true;
          }
        }
        if (!patched) std::memset(img.data() + 8, 0, 12);  // no backing file
      }
    }
    tern::UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    if (!fd) std::abort();
    if (!img.empty() && ::write(fd.get(), img.data(), img.size()) != static_cast<ssize_t>(img.size())) {
      std::abort();
    }
  }
  for (bool writable : {false, true}) {
    std::string top = dir + "/0";
    tern::UniqueFd fd(::open(top.c_str(), (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC));
    if (!fd) return;
    EngineOptions o;
    o.read_only = !writable;
    o.allow_backing = true;  // only names inside `dir`, see above
    o.allow_block_backing = false;
    o.l2_cache_bytes = 256 << 10;
    o.refcount_cache_bytes = 64 << 10;
    o.warn = [](const std::string&) {};
    auto engine = Engine::open(std::make_unique<FdHostFile>(std::move(fd)), top, o);
    if (!engine) continue;
    Engine& e = **engine;
    std::vector<uint8_t> buf(64 << 10);
    iovec v{buf.data(), buf.size()};
    std::span<const iovec> iov(&v, 1);
    const uint64_t disk = e.size();
    for (uint64_t k = 0; k < 8 && disk >= buf.size(); ++k) {
      uint64_t pick = size > k ? data[size - 1 - k] : k;
      uint64_t offset = (disk - buf.size()) / 255 * pick / 512 * 512;
      (void)e.read(offset, iov, nullptr);
    }
    if (writable && disk >= 4096) {
      // A partial-cluster write copies the rest of the cluster from the
      // backing file.
      iovec small{buf.data(), 512};
      (void)e.write(disk / 3 / 512 * 512, std::span<const iovec>(&small, 1), nullptr);
      (void)e.write_zeroes(0, 4096, false);
      (void)e.discard(disk / 2 / 512 * 512, 4096);
      (void)e.check(Repair::None);
      (void)e.close();
    }
  }
}

}  // namespace tern::block::qcow2::fuzz

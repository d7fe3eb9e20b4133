// The QCOW2 fuzz body, shared by the libFuzzer target and the regression
// test that replays its findings (tests/fuzz/regressions/) in every build.
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
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




}  // namespace tern::block::qcow2::fuzz

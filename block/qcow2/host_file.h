// HostFile: the file layer under the QCOW2 engine. The engine does every
// metadata and synchronous data transfer through it, so tests can plug in a
// layer that injects faults. FdHostFile is the real one over a UniqueFd.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "base/unique_fd.h"
#include "block/error.h"

namespace tern::block::qcow2 {

class HostFile {
 public:
  virtual ~HostFile() = default;
  // Reads buf.size() bytes at `offset`; bytes past the end of the file read
  // as zeros (a QCOW2 file may end before its last allocated cluster).
  [[nodiscard]] virtual Result<void> read_at(uint64_t offset, std::span<uint8_t> buf) = 0;
  [[nodiscard]] virtual Result<void> write_at(uint64_t offset, std::span<const uint8_t> buf) = 0;
  [[nodiscard]] virtual Result<void> sync() = 0;
  [[nodiscard]] virtual Result<uint64_t> size() = 0;
  [[nodiscard]] virtual Result<void> truncate(uint64_t size) = 0;
  // Extends the file over [offset, offset + length) with space that reads
  // as zeros, so later data writes there do not extend the file (which
  // serializes O_DIRECT writes). A layer may do nothing.
  [[nodiscard]] virtual Result<void> preallocate(uint64_t offset, uint64_t length) = 0;
  // The descriptor for asynchronous data I/O beside this layer, or -1 when
  // every transfer must go through the virtual calls above.
  virtual int fd() const = 0;
};

class FdHostFile final : public HostFile {
 public:
  explicit FdHostFile(UniqueFd fd) : fd_(std::move(fd)) {}

  Result<void> read_at(uint64_t offset, std::span<uint8_t> buf) override;
  Result<void> write_at(uint64_t offset, std::span<const uint8_t> buf) override;
  Result<void> sync() override;
  Result<uint64_t> size() override;
  Result<void> truncate(uint64_t size) override;
  Result<void> preallocate(uint64_t offset, uint64_t length) override;
  int fd() const override { return fd_.get(); }

 private:
  UniqueFd fd_;
};

// Opens `path` with O_CLOEXEC (and O_RDWR unless read_only).
[[nodiscard]] Result<std::unique_ptr<FdHostFile>> open_host_file(const std::string& path,
                                                                 bool read_only);

}  // namespace tern::block::qcow2

// RawDisk: a raw image (regular file or block device) as a DiskFile. Its
// IoContexts come in three kinds (OpenOptions::aio):
//   Sync     the "raw" backend: each request runs in submit() with
//            preadv/pwritev, and its completion is queued at once;
//   Native   the "raw_async" backend: reads, writes and flushes go to Linux
//            AIO (io_submit with IOCB_FLAG_RESFD on the context's eventfd);
//            discard and write-zeroes, which AIO cannot do, go to a small
//            worker pool signalling the same eventfd;
//   Threads  everything goes to a worker pool; also the fallback when
//            io_setup is unavailable (logged once).
// direct=on opens with O_DIRECT: offsets and lengths must be multiples of the
// file's direct-I/O offset alignment (Errc::Unaligned otherwise); buffers
// that are not aligned in memory are bounced, 1 MiB at a time, through one
// aligned buffer per thread that runs requests (Native: by its worker).
// Reads and writes longer than kMaxTransferBytes are Errc::TooLarge.
#pragma once

#include <atomic>
#include <memory>
#include <string>

#include "base/unique_fd.h"
#include "block/disk.h"
#include "block/open.h"

namespace tern::block {

class RawDisk final : public DiskFile {
 public:
  [[nodiscard]] static Result<std::unique_ptr<RawDisk>> open(const OpenOptions& options);
  ~RawDisk() override;

  std::string_view format_name() const override { return "raw"; }
  uint64_t size() const override { return size_.load(std::memory_order_acquire); }
  Result<void> resize(uint64_t new_size) override;
  Topology topology() const override { return topology_; }
  Capabilities capabilities() const override;
  Result<std::unique_ptr<IoContext>> make_io_context(uint32_t depth) override;
  Result<void> close() override;
  uint64_t allocated_bytes() const override;
  void image_fds(std::vector<int>& out) const override { out.push_back(fd_.get()); }

  // What every context checks before doing a request: range, read-only,
  // direct-I/O alignment of offset and length.
  [[nodiscard]] Result<void> validate(const Request& request) const;
  // Runs a request synchronously (Sync contexts and the worker pools).
  [[nodiscard]] Result<void> execute(const Request& request) const;
  int fd() const { return fd_.get(); }
  bool direct() const { return direct_; }
  uint32_t memory_alignment() const { return topology_.buffer_alignment; }
  const std::string& path() const { return path_; }

 private:
  RawDisk(UniqueFd fd, std::string path, bool read_only, bool direct, bool block_device,
          AioMode aio, uint64_t size, Topology topology);
  [[nodiscard]] Result<void> write_zeroes(uint64_t offset, uint64_t length, bool may_unmap) const;

  UniqueFd fd_;
  const std::string path_;
  const bool read_only_;
  const bool direct_;
  const bool block_device_;
  const AioMode aio_;
  std::atomic<uint64_t> size_;  // grows only; every context reads it
  const Topology topology_;
};

}  // namespace tern::block

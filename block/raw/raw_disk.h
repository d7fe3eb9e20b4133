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
//
// A raw image whose format was probed (open_disk with ImageType::Auto)
// refuses, with Errc::ProbeChange, a write after which its first
// kProbeBytes would probe as another format: QEMU's rule for probed raw
// images (docs/SECURITY.md, "Probed images"). Such a write runs from a
// private copy of those bytes, checked, so the guest cannot change them
// between the check and the write.
#pragma once

#include <algorithm>
#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "base/unique_fd.h"
#include "block/disk.h"
#include "block/open.h"

namespace tern::block {

class RawDisk final : public DiskFile {
 public:
  // `probed`: the format was found by probing (the rule above applies).
  [[nodiscard]] static Result<std::unique_ptr<RawDisk>> open(const OpenOptions& options, bool probed = false);
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
  // A write that reaches the probed bytes of a probed image: it must go
  // through write_probe_window(), never straight from guest memory.
  bool guards_probe_window(const Request& r) const {
    return probed_ && r.op == Op::Write && r.offset < probe_window();
  }
  // The part of such a write inside the window, from a checked private
  // copy; `tail` is set to what is left (offset past the window, iov into
  // `tail_iov`), empty when nothing is.
  [[nodiscard]] Result<void> write_probe_window(const Request& r, Request& tail, std::vector<iovec>& tail_iov) const;

 private:
  RawDisk(UniqueFd fd, std::string path, bool read_only, bool direct, bool block_device,
          AioMode aio, uint64_t size, Topology topology, bool probed);
  // kProbeBytes, or one direct-I/O block when that is larger (so the
  // private copy is written with an aligned offset and length).
  uint64_t probe_window() const { return std::max<uint64_t>(kProbeBytes, topology_.logical_block_size); }
  [[nodiscard]] Result<void> write_zeroes(uint64_t offset, uint64_t length, bool may_unmap) const;

  UniqueFd fd_;
  const std::string path_;
  const bool read_only_;
  const bool direct_;
  const bool block_device_;
  const AioMode aio_;
  std::atomic<uint64_t> size_;  // grows only; every context reads it
  const Topology topology_;
  const bool probed_;
  // Serializes writes into the probe window: two partial writes checked
  // against the same old bytes could otherwise assemble a magic together.
  mutable std::mutex probe_mutex_;
};

}  // namespace tern::block

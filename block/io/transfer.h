// The one full-transfer loop of the block layer: every synchronous
// preadv/pwritev of a backend, the converter and the QCOW2 engine's host
// file goes through transfer_all(), which moves a whole iovec list or says
// why not (at most IOV_MAX segments per call, EINTR retried, a short
// transfer continued where it stopped).
#pragma once

#include <sys/uio.h>

#include <cstdint>
#include <span>

#include "block/error.h"

namespace tern::block::io {

enum class Direction { Read, Write };

// Transfers all of `iov` at file offset `offset`. Returns the bytes moved:
// fewer than the list holds only for a read that reached the end of the
// file (what the rest means is the caller's rule: zeros, or an error). A
// write that moves nothing is Errc::ShortTransfer; a failed call is
// ReadFailed or WriteFailed with its errno.
[[nodiscard]] Result<uint64_t> transfer_all(int fd, Direction dir, std::span<const iovec> iov,
                                            uint64_t offset);

// transfer_all() for a read whose bytes past the end of the file read as
// zeros (a raw file whose size is not a multiple of 512, a QCOW2 file that
// ends before its last cluster).
[[nodiscard]] Result<void> read_zero_filled(int fd, std::span<const iovec> iov, uint64_t offset);
[[nodiscard]] Result<void> read_zero_filled(int fd, std::span<uint8_t> buf, uint64_t offset);

// transfer_all() of one buffer for writing. One buffer is moved with
// pread(2)/pwrite(2), a list with preadv(2)/pwritev(2): the system calls
// tern's per-thread seccomp filters expect of each (vmm/sandbox.cpp).
[[nodiscard]] Result<void> write_all(int fd, std::span<const uint8_t> buf, uint64_t offset);

// fdatasync(2) (data_only) or fsync(2), retried on EINTR; FlushFailed.
[[nodiscard]] Result<void> sync_file(int fd, bool data_only = true);

}  // namespace tern::block::io

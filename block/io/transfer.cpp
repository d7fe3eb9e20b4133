#include "block/io/transfer.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <vector>

#include "block/io/iov.h"

namespace tern::block::io {

Result<uint64_t> transfer_all(int fd, Direction dir, std::span<const iovec> iov_in, uint64_t offset) {
  // A private copy: a partial transfer advances the first unfinished
  // segment in place.
  std::vector<iovec> iov(iov_in.begin(), iov_in.end());
  uint64_t moved = 0;
  size_t first = 0;
  while (first < iov.size()) {
    if (iov[first].iov_len == 0) {
      ++first;
      continue;
    }
    int count = static_cast<int>(std::min<size_t>(iov.size() - first, IOV_MAX));
    auto at = static_cast<off_t>(offset + moved);
    ssize_t n;
    // One segment goes through pread/pwrite: tern's sandbox lets the main
    // thread, which writes back QCOW2 metadata when a disk closes, make
    // only those (vmm/sandbox.cpp); the vectored calls are for lists.
    if (count == 1) {
      n = dir == Direction::Read ? ::pread(fd, iov[first].iov_base, iov[first].iov_len, at)
                                 : ::pwrite(fd, iov[first].iov_base, iov[first].iov_len, at);
    } else {
      n = dir == Direction::Read ? ::preadv(fd, iov.data() + first, count, at)
                                 : ::pwritev(fd, iov.data() + first, count, at);
    }
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail(dir == Direction::Read ? Errc::ReadFailed : Errc::WriteFailed, errno);
    }
    if (n == 0) {
      if (dir == Direction::Read) return moved;  // end of file
      return fail(Errc::ShortTransfer);
    }
    moved += static_cast<uint64_t>(n);
    auto left = static_cast<size_t>(n);
    while (first < iov.size() && left >= iov[first].iov_len) {
      left -= iov[first].iov_len;
      ++first;
    }
    if (left > 0) {
      iov[first].iov_base = static_cast<uint8_t*>(iov[first].iov_base) + left;
      iov[first].iov_len -= left;
    }
  }
  return moved;
}

Result<void> read_zero_filled(int fd, std::span<const iovec> iov, uint64_t offset) {
  auto moved = transfer_all(fd, Direction::Read, iov, offset);
  if (!moved) return std::unexpected(moved.error());
  const uint64_t total = iov_length(iov);
  if (*moved < total) iov_zero(iov, *moved, total - *moved);
  return {};
}

Result<void> read_zero_filled(int fd, std::span<uint8_t> buf, uint64_t offset) {
  iovec v{buf.data(), buf.size()};
  return read_zero_filled(fd, std::span<const iovec>(&v, 1), offset);
}

Result<void> write_all(int fd, std::span<const uint8_t> buf, uint64_t offset) {
  iovec v{const_cast<uint8_t*>(buf.data()), buf.size()};
  auto moved = transfer_all(fd, Direction::Write, std::span<const iovec>(&v, 1), offset);
  if (!moved) return std::unexpected(moved.error());
  return {};
}

Result<void> sync_file(int fd, bool data_only) {
  while ((data_only ? ::fdatasync(fd) : ::fsync(fd)) != 0) {
    if (errno != EINTR) return fail(Errc::FlushFailed, errno);
  }
  return {};
}

}  // namespace tern::block::io

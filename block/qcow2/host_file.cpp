#include "block/qcow2/host_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "block/io/transfer.h"

namespace tern::block::qcow2 {

// Past the end of the file the image reads as zeros (HostFile's rule).
Result<void> FdHostFile::read_at(uint64_t offset, std::span<uint8_t> buf) {
  return io::read_zero_filled(fd_.get(), buf, offset);
}

Result<void> FdHostFile::write_at(uint64_t offset, std::span<const uint8_t> buf) {
  return io::write_all(fd_.get(), buf, offset);
}

Result<void> FdHostFile::sync() { return io::sync_file(fd_.get()); }

Result<uint64_t> FdHostFile::size() {
  // lseek rather than fstat: it also gives the size of a block device.
  off_t end = ::lseek(fd_.get(), 0, SEEK_END);
  if (end < 0) return fail(Errc::ReadFailed, errno, "lseek");
  return static_cast<uint64_t>(end);
}

Result<void> FdHostFile::truncate(uint64_t size) {
  while (::ftruncate(fd_.get(), static_cast<off_t>(size)) != 0) {
    if (errno != EINTR) return fail(Errc::ResizeFailed, errno);
  }
  return {};
}

Result<void> FdHostFile::preallocate(uint64_t offset, uint64_t length) {
  while (::fallocate(fd_.get(), 0, static_cast<off_t>(offset), static_cast<off_t>(length)) != 0) {
    if (errno == EINTR) continue;
    // Not every file system can; extending writes still work, only slower.
    if (errno == EOPNOTSUPP) return {};
    return fail(Errc::NoSpace, errno, "fallocate");
  }
  return {};
}

Result<std::unique_ptr<FdHostFile>> open_host_file(const std::string& path, bool read_only) {
  int fd = ::open(path.c_str(), (read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC);
  if (fd < 0) return fail(Errc::OpenFailed, errno, path);
  UniqueFd owned(fd);
  struct stat st {};
  if (::fstat(fd, &st) != 0) return fail(Errc::OpenFailed, errno, path);
  if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) return fail(Errc::NotAFile, 0, path);
  return std::make_unique<FdHostFile>(std::move(owned));
}

}  // namespace tern::block::qcow2

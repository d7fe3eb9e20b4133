#include "block/open.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>

#include "base/unique_fd.h"
#include "block/qcow2/qcow2_disk.h"
#include "block/raw/raw_disk.h"

namespace tern::block {
namespace {

// The first bytes of the image tell its format; QCOW2 starts "QFI\xfb".
Result<ImageType> probe(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);  // a FIFO must not block
  if (fd < 0) return fail(Errc::OpenFailed, errno, path);
  UniqueFd owned(fd);
  struct stat st {};
  if (::fstat(fd, &st) != 0) return fail(Errc::OpenFailed, errno, path);
  if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) return fail(Errc::NotAFile, 0, path);
  std::array<unsigned char, 4> magic{};
  ssize_t n;
  do {
    n = ::pread(fd, magic.data(), magic.size(), 0);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return fail(Errc::ReadFailed, errno, path);
  if (n == 4 && magic == std::array<unsigned char, 4>{'Q', 'F', 'I', 0xfb}) return ImageType::Qcow2;
  return ImageType::Raw;
}

}  // namespace

Result<std::unique_ptr<DiskFile>> open_disk(const OpenOptions& options) {
  ImageType type = options.type;
  if (type == ImageType::Auto) {
    auto probed = probe(options.path);
    if (!probed) return std::unexpected(probed.error());
    type = *probed;
  }
  if (type == ImageType::Qcow2) {
    auto disk = qcow2::Qcow2Disk::open(options);
    if (!disk) return std::unexpected(disk.error());
    return std::unique_ptr<DiskFile>(std::move(*disk));
  }
  auto raw = RawDisk::open(options);
  if (!raw) return std::unexpected(raw.error());
  return std::unique_ptr<DiskFile>(std::move(*raw));
}

}  // namespace tern::block

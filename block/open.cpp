#include "block/open.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>

#include "base/unique_fd.h"
#include "block/qcow2/qcow2_disk.h"
#include "block/raw/raw_disk.h"

namespace tern::block {
namespace {

// The first bytes of the image tell its format (probe_bytes).
Result<ImageType> probe(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);  // a FIFO must not block
  if (fd < 0) return fail(Errc::OpenFailed, errno, path);
  UniqueFd owned(fd);
  struct stat st {};
  if (::fstat(fd, &st) != 0) return fail(Errc::OpenFailed, errno, path);
  if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) return fail(Errc::NotAFile, 0, path);
  std::array<uint8_t, kProbeBytes> head{};
  ssize_t n;
  do {
    n = ::pread(fd, head.data(), head.size(), 0);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return fail(Errc::ReadFailed, errno, path);
  return probe_bytes(std::span<const uint8_t>(head.data(), static_cast<size_t>(n)));
}

}  // namespace

ImageType probe_bytes(std::span<const uint8_t> head) {
  // QCOW2 starts "QFI\xfb" (docs/qcow2.md); every other image is raw.
  constexpr std::array<uint8_t, 4> kQcow2Magic{'Q', 'F', 'I', 0xfb};
  if (head.size() >= kQcow2Magic.size() && std::equal(kQcow2Magic.begin(), kQcow2Magic.end(), head.begin())) {
    return ImageType::Qcow2;
  }
  return ImageType::Raw;
}

std::optional<ImageType> parse_image_type(std::string_view name) {
  if (name == "raw") return ImageType::Raw;
  if (name == "qcow2") return ImageType::Qcow2;
  if (name == "auto" || name.empty()) return ImageType::Auto;
  return std::nullopt;
}

std::string resolve_backing_name(const std::string& overlay_path, const std::string& name) {
  if (name.starts_with('/')) return name;
  auto slash = overlay_path.rfind('/');
  if (slash == std::string::npos) return name;
  return overlay_path.substr(0, slash + 1) + name;
}

Result<std::unique_ptr<DiskFile>> open_disk(const OpenOptions& options) {
  ImageType type = options.type;
  const bool probed = type == ImageType::Auto;
  if (probed) {
    auto found = probe(options.path);
    if (!found) return std::unexpected(found.error());
    type = *found;
  }
  if (type == ImageType::Qcow2) {
    OpenOptions o = options;
    // A probed header does not get to name host files unless the caller
    // lets it (OpenOptions::follow_probed_backing).
    const bool refuse_backing = probed && options.allow_backing && !options.follow_probed_backing;
    if (refuse_backing) o.allow_backing = false;
    auto disk = qcow2::Qcow2Disk::open(o);
    if (!disk) {
      if (refuse_backing && disk.error().code == Errc::BackingRefused) {
        return fail(Errc::ProbedBacking, 0, disk.error().detail);
      }
      return std::unexpected(disk.error());
    }
    return std::unique_ptr<DiskFile>(std::move(*disk));
  }
  // QEMU's rule for a probed raw image: the guest may not write what
  // would make the next probe see another format (RawDisk::open).
  auto raw = RawDisk::open(options, probed);
  if (!raw) return std::unexpected(raw.error());
  return std::unique_ptr<DiskFile>(std::move(*raw));
}

}  // namespace tern::block

#include "block/new_image.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "base/unique_fd.h"

namespace tern::block {
namespace {

std::string directory_of(const std::string& path) {
  auto slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

// Whether another open file description holds a lock on the image at `fd`
// that a writer's exclusive lock would conflict with (image_lock.h).
bool in_use(int fd) {
  struct flock probe {};
  probe.l_type = F_WRLCK;
  probe.l_whence = SEEK_SET;
  probe.l_start = 0;
  probe.l_len = 0;
  return ::fcntl(fd, F_OFD_GETLK, &probe) == 0 && probe.l_type != F_UNLCK;
}

}  // namespace

Result<NewImage> NewImage::prepare(const std::string& destination) {
  if (destination.empty()) return fail(Errc::InvalidArgument, 0, "no output file name");
  struct stat st {};
  const bool exists = ::lstat(destination.c_str(), &st) == 0;
  if (!exists && errno != ENOENT) return fail(Errc::OpenFailed, errno, destination);
  if (exists && !S_ISREG(st.st_mode)) return NewImage(destination, destination, false);
  if (exists) {
    int fd = ::open(destination.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return fail(Errc::OpenFailed, errno, destination);
    UniqueFd owned(fd);
    if (in_use(fd)) {
      return fail(Errc::LockConflict, 0, destination + ": the image is open (an image lock holds it); not replaced");
    }
  }
  const std::string dir = directory_of(destination);
  const std::string base = destination.substr(destination.rfind('/') + 1);
  // A hidden name in the same directory: the rename stays in one file
  // system, and relative backing file names resolve as for the destination.
  for (unsigned attempt = 0; attempt < 100; ++attempt) {
    std::string temp = dir + "/." + base + ".tern-img-" + std::to_string(::getpid()) + "-" + std::to_string(attempt);
    int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0 && errno == EEXIST) continue;
    if (fd < 0) return fail(Errc::OpenFailed, errno, destination);
    UniqueFd owned(fd);
    NewImage image(destination, temp, true);
    // Replacing a file keeps its permissions, as writing it in place would.
    if (exists && ::fchmod(fd, st.st_mode & 07777) != 0) return fail(Errc::OpenFailed, errno, destination);
    return image;
  }
  return fail(Errc::OpenFailed, EEXIST, destination);
}

NewImage::NewImage(NewImage&& other) noexcept
    : destination_(std::move(other.destination_)), path_(std::move(other.path_)), pending_(other.pending_) {
  other.pending_ = false;
}

NewImage::~NewImage() {
  if (pending_) ::unlink(path_.c_str());
}

Error NewImage::named_for_destination(Error e) const {
  for (auto at = e.detail.find(path_); at != std::string::npos; at = e.detail.find(path_, at)) {
    e.detail.replace(at, path_.size(), destination_);
    at += destination_.size();
  }
  return e;
}

Result<void> NewImage::commit() {
  if (!pending_) return {};
  if (::rename(path_.c_str(), destination_.c_str()) != 0) return fail(Errc::WriteFailed, errno, destination_);
  pending_ = false;
  // The rename itself made durable (the file's data was synced by whoever wrote it).
  int fd = ::open(directory_of(destination_).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return fail(Errc::FlushFailed, errno, destination_);
  UniqueFd dir(fd);
  while (::fsync(fd) != 0) {
    if (errno != EINTR) return fail(Errc::FlushFailed, errno, destination_);
  }
  return {};
}

}  // namespace tern::block

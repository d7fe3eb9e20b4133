#include "block/qcow2/image_lock.h"

#include <fcntl.h>

#include <cerrno>

namespace tern::block::qcow2 {

Result<void> lock_image(int fd, bool exclusive, const std::string& path) {
  struct flock lock {};
  lock.l_type = exclusive ? F_WRLCK : F_RDLCK;
  lock.l_whence = SEEK_SET;
  lock.l_start = 0;
  lock.l_len = 0;  // to the end of the file, however far it grows
  while (::fcntl(fd, F_OFD_SETLK, &lock) != 0) {
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EACCES) return fail(Errc::LockConflict, errno, path);
    return fail(Errc::LockFailed, errno, path);
  }
  return {};
}

}  // namespace tern::block::qcow2

#include "block/image_lock.h"

#include <fcntl.h>

#include <cerrno>

namespace tern::block {

Result<void> lock_image(int fd, bool exclusive, const std::string& path) {
  struct flock lock {};
  lock.l_type = exclusive ? F_WRLCK : F_RDLCK;
  lock.l_whence = SEEK_SET;
  lock.l_start = 0;
  lock.l_len = 0;  // every byte from 0, however far the image grows
  while (::fcntl(fd, F_OFD_SETLK, &lock) != 0) {
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EACCES) return fail(Errc::LockFailed, errno, path);
    // Say what holds it. OFD locks carry no owner pid (l_pid is -1).
    struct flock holder = lock;
    std::string what = "another process holds a lock on it";
    if (::fcntl(fd, F_OFD_GETLK, &holder) == 0 && holder.l_type != F_UNLCK) {
      what = holder.l_type == F_WRLCK ? "another process has it open for writing (exclusive lock)"
                                      : "another process has it open read-only (shared lock)";
    }
    return fail(Errc::LockConflict, 0, path + ": " + what + "; use lock=off to bypass");
  }
  return {};
}

}  // namespace tern::block

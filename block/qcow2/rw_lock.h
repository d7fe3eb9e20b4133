// RwLock: a reader/writer lock that prefers writers, for the QCOW2 mapping
// lock (docs/qcow2.md, "Concurrency"). std::shared_mutex is glibc's default
// rwlock, which prefers readers: with a queue always inside a shared
// section, an allocating write on another queue could wait indefinitely.
// Here a waiting writer holds off new readers. Meets the Lockable and
// SharedLockable requirements (std::unique_lock, std::shared_lock).
#pragma once

#include <pthread.h>

#include <cstdlib>

namespace tern::block::qcow2 {

class RwLock {
 public:
  RwLock() {
    pthread_rwlockattr_t attr;
    if (pthread_rwlockattr_init(&attr) != 0) std::abort();
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    if (pthread_rwlock_init(&lock_, &attr) != 0) std::abort();
    pthread_rwlockattr_destroy(&attr);
  }
  ~RwLock() { pthread_rwlock_destroy(&lock_); }
  RwLock(const RwLock&) = delete;
  RwLock& operator=(const RwLock&) = delete;

  // Failure here is a programming error (deadlock, unowned unlock): abort.
  void lock() {
    if (pthread_rwlock_wrlock(&lock_) != 0) std::abort();
  }
  void unlock() {
    if (pthread_rwlock_unlock(&lock_) != 0) std::abort();
  }
  void lock_shared() {
    if (pthread_rwlock_rdlock(&lock_) != 0) std::abort();
  }
  void unlock_shared() { unlock(); }

 private:
  pthread_rwlock_t lock_;
};

}  // namespace tern::block::qcow2

// ControlChannel: runs commands from other threads (the API thread) on the
// thread that owns the VM (the VMM's control thread). The owner epoll-waits
// on fd() and calls run_pending(); a caller blocks in call() until its
// command ran there or the timeout passed.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>

#include "base/event_fd.h"

namespace tern::api {

class ControlChannel {
 public:
  static SysResult<std::unique_ptr<ControlChannel>> create();

  int fd() const { return wake_.fd(); }

  // On the owner thread: runs every queued command.
  void run_pending();
  // On the owner thread, when it stops serving: queued and future commands
  // are abandoned (their callers get nullopt at once).
  void close();

  // Runs `command` on the owner thread and returns its result, or nullopt
  // when the channel is closed or `timeout` passes first.
  template <class T>
  std::optional<T> call(std::function<T()> command, std::chrono::milliseconds timeout) {
    auto slot = std::make_shared<Slot<T>>();
    // The guard marks the slot finished when the command is destroyed, run
    // or not, so an abandoned command releases its caller at once.
    auto guard = std::make_shared<FinishGuard<T>>(slot);
    bool queued = post([guard, command = std::move(command)] {
      T value = command();
      std::lock_guard lock(guard->slot->mutex);
      guard->slot->value = std::move(value);
    });
    guard.reset();
    if (!queued) return std::nullopt;
    std::unique_lock lock(slot->mutex);
    slot->done.wait_for(lock, timeout, [&] { return slot->finished; });
    return std::move(slot->value);
  }

 private:
  template <class T>
  struct Slot {
    std::mutex mutex;
    std::condition_variable done;
    std::optional<T> value;  // guarded by mutex
    bool finished = false;   // guarded by mutex
  };
  template <class T>
  struct FinishGuard {
    explicit FinishGuard(std::shared_ptr<Slot<T>> s) : slot(std::move(s)) {}
    ~FinishGuard() {
      std::lock_guard lock(slot->mutex);
      slot->finished = true;
      slot->done.notify_all();
    }
    std::shared_ptr<Slot<T>> slot;
  };

  explicit ControlChannel(EventFd wake) : wake_(std::move(wake)) {}
  bool post(std::function<void()> work);

  EventFd wake_;
  std::mutex mutex_;
  std::deque<std::function<void()>> queue_;  // guarded by mutex_
  bool closed_ = false;                      // guarded by mutex_
};

}  // namespace tern::api

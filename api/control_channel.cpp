#include "api/control_channel.h"

namespace tern::api {

SysResult<std::unique_ptr<ControlChannel>> ControlChannel::create() {
  auto wake = EventFd::create();
  if (!wake) return std::unexpected(wake.error());
  return std::unique_ptr<ControlChannel>(new ControlChannel(std::move(*wake)));
}

bool ControlChannel::post(std::function<void()> work) {
  {
    std::lock_guard lock(mutex_);
    if (closed_) return false;
    queue_.push_back(std::move(work));
  }
  wake_.signal();
  return true;
}

void ControlChannel::run_pending() {
  wake_.consume();
  for (;;) {
    std::function<void()> work;
    {
      std::lock_guard lock(mutex_);
      if (queue_.empty()) return;
      work = std::move(queue_.front());
      queue_.pop_front();
    }
    work();
  }
}

void ControlChannel::close() {
  std::deque<std::function<void()>> abandoned;
  {
    std::lock_guard lock(mutex_);
    closed_ = true;
    abandoned.swap(queue_);
  }
  // Destroying the abandoned commands releases their callers (FinishGuard).
}

}  // namespace tern::api

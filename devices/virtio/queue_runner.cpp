#include "devices/virtio/queue_runner.h"

#include <poll.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <cerrno>

#include "base/thread_sandbox.h"

namespace tern::devices {

std::unique_ptr<QueueRunner> QueueRunner::start(const GuestMemory& memory, uint64_t features,
                                                const ActiveQueue& active, uint16_t max_size,
                                                VirtioInterrupt& interrupt, const MakeHandler& make_handler) {
  std::string who = "queue " + std::to_string(active.index) + ": ";
  QueueFeatures qf{.event_idx = (features & kVirtioFRingEventIdx) != 0,
                   .indirect = (features & kVirtioFRingIndirectDesc) != 0};
  auto queue = Virtqueue::create(memory, active.config, qf, max_size);
  if (!queue) {
    interrupt.needs_reset(who + queue_fault_name(queue.error()));
    return nullptr;
  }
  auto handler = make_handler(active.config.size);
  if (!handler) {
    interrupt.needs_reset(who + handler.error());
    return nullptr;
  }
  auto stop = EventFd::create();
  UniqueFd epoll(::epoll_create1(EPOLL_CLOEXEC));
  if (!stop || !epoll) {
    interrupt.needs_reset(who + "cannot create fds");
    return nullptr;
  }
  auto r = std::unique_ptr<QueueRunner>(
      new QueueRunner(active, std::move(*queue), std::move(*stop), std::move(epoll), interrupt));
  r->handler_ = std::move(*handler);
  int completion = r->handler_->completion_fd();
  if (!r->watch(active.notify_fd, kNotify) || (completion >= 0 && !r->watch(completion, kCompletion)) ||
      !r->watch(r->stop_.fd(), kStop)) {
    interrupt.needs_reset(who + "epoll_ctl failed");
    return nullptr;
  }
  // The queue thread: serves this one queue's notifications and completions
  // until the device is reset or destroyed (QueueRunner::run).
  r->thread_ = start_thread(ThreadKind::VirtioQueue, [raw = r.get()](std::stop_token token) { raw->run(token); });
  return r;
}

QueueRunner::QueueRunner(const ActiveQueue& active, std::unique_ptr<Virtqueue> queue, EventFd stop,
                         UniqueFd epoll, VirtioInterrupt& interrupt)
    : index_(active.index),
      notify_fd_(active.notify_fd),
      queue_(std::move(queue)),
      stop_(std::move(stop)),
      epoll_(std::move(epoll)),
      interrupt_(interrupt) {}

bool QueueRunner::watch(int fd, Tag tag) {
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u32 = tag;
  return ::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev) == 0;
}

void QueueRunner::run(std::stop_token token) {
  std::stop_callback wake(token, [this] { stop_.signal(); });
  // Notifications sent before activation are in the ring already.
  serve_avail(token);
  complete();
  while (!token.stop_requested()) {
    epoll_event events[3];
    int n = ::epoll_wait(epoll_.get(), events, 3, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      interrupt_.needs_reset("epoll_wait failed: " + errno_text(errno));
      break;
    }
    bool notified = false;
    for (int i = 0; i < n; ++i) {
      if (events[i].data.u32 == kNotify) {
        uint64_t v;
        while (::read(notify_fd_, &v, sizeof v) < 0 && errno == EINTR) {
        }
        notified = true;
      }
    }
    if (notified) serve_avail(token);
    complete();
  }
  // Reset or teardown: nothing may reach the rings any more, but a backend
  // may still be writing into guest memory, so wait for every request in
  // flight before the handler and the queue go away. What has not started
  // is cancelled, so this waits for the few requests running, not for a
  // queue full of large ones.
  queue_->detach();
  handler_->cancel();
  int completion = handler_->completion_fd();
  while (handler_->in_flight() != 0) {
    pollfd p{completion, POLLIN, 0};
    ::poll(&p, 1, 100);
    handler_->complete();
  }
}

void QueueRunner::serve_avail(std::stop_token token) {
  if (queue_->broken()) return;  // already reported; wait for the reset
  for (;;) {
    for (;;) {
      // A reset or teardown stops serving between requests (a handler that
      // finishes requests inside handle() would otherwise run the whole ring
      // first); what stays in the ring is the driver's again.
      if (token.stop_requested()) return;
      auto chain = queue_->pop();
      if (!chain) {
        interrupt_.needs_reset("queue " + std::to_string(index_) + ": " + queue_fault_name(chain.error()));
        return;
      }
      if (!*chain) break;
      handler_->handle(std::move(**chain));
    }
    // EVENT_IDX: ask for the next notification, then look once more for
    // chains that raced with it.
    if (!queue_->arm_notification()) break;
  }
  signal_if_needed();
}

void QueueRunner::complete() {
  if (handler_->complete()) signal_if_needed();
}

void QueueRunner::signal_if_needed() {
  if (queue_->needs_interrupt()) interrupt_.signal_queue(index_);
}

}  // namespace tern::devices

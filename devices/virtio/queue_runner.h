// QueueRunner: one virtqueue served by one thread, for any virtio device.
// The runner owns the Virtqueue (validated against guest memory when it
// starts), an epoll set, a stop eventfd and the thread; the device supplies
// a QueueHandler that turns chains into work. The loop:
//
//   notify eventfd  -> drain it, pop every available chain into handle(),
//                      re-arm notifications (EVENT_IDX) and look once more
//   completion fd   -> complete() (the handler returns used buffers)
//   either          -> interrupt the driver if it asked for one
//   stop            -> detach the rings, cancel() what has not started and
//                      wait until in_flight() is 0, so no backend still
//                      writes into guest memory after a reset
//
// A ring the driver broke (Virtqueue::pop fails) ends in
// VirtioInterrupt::needs_reset(); the runner then idles until the reset.
//
// Threads: start() and the destructor on the activating/resetting thread
// (a vCPU under the transport's lock); everything else on the queue thread.
#pragma once

#include <cstdint>
#include <expected>
#include <functional>
#include <memory>
#include <stop_token>
#include <string>
#include <thread>

#include "base/event_fd.h"
#include "base/unique_fd.h"
#include "devices/guest_memory.h"
#include "devices/virtio/virtio_device.h"
#include "devices/virtio/virtqueue.h"

namespace tern::devices {

// The device's side of one queue. Every method runs on the queue thread.
class QueueHandler {
 public:
  virtual ~QueueHandler() = default;
  // A chain the driver made available. The handler answers it now (lets the
  // chain go) or keeps it until its work completes.
  virtual void handle(DescriptorChain chain) = 0;
  // An eventfd signalled when kept work finished, or -1.
  virtual int completion_fd() const { return -1; }
  // Returns finished work to the used ring; true when something was returned.
  virtual bool complete() { return false; }
  // Reset: abandon work that has not started.
  virtual void cancel() {}
  // Kept chains whose work has not completed.
  virtual uint32_t in_flight() const { return 0; }
};

class QueueRunner {
 public:
  // Makes the handler once the queue is known to be well-formed; `size` is
  // the queue size the driver chose. An error string ends in NEEDS_RESET.
  using MakeHandler = std::function<std::expected<std::unique_ptr<QueueHandler>, std::string>(uint16_t size)>;

  // Validates the queue, makes the handler and starts the queue's thread.
  // On failure reports interrupt.needs_reset() and returns nullptr.
  static std::unique_ptr<QueueRunner> start(const GuestMemory& memory, uint64_t features,
                                            const ActiveQueue& active, uint16_t max_size,
                                            VirtioInterrupt& interrupt, const MakeHandler& make_handler);
  // Stops the thread (request + stop eventfd) and joins it.
  ~QueueRunner() = default;

  uint16_t index() const { return index_; }

 private:
  enum Tag : uint32_t { kNotify, kCompletion, kStop };

  QueueRunner(const ActiveQueue& active, std::unique_ptr<Virtqueue> queue, EventFd stop, UniqueFd epoll,
              VirtioInterrupt& interrupt);
  bool watch(int fd, Tag tag);
  // The queue thread's whole life: serve until stopped, then wait for the
  // work in flight.
  void run(std::stop_token token);
  void serve_avail(std::stop_token token);
  void complete();
  void signal_if_needed();

  const uint16_t index_;
  const int notify_fd_;
  std::unique_ptr<Virtqueue> queue_;
  std::unique_ptr<QueueHandler> handler_;  // after queue_: its chains go back to it
  EventFd stop_;
  UniqueFd epoll_;
  VirtioInterrupt& interrupt_;
  std::jthread thread_;  // last: joined before the members it uses go away
};

}  // namespace tern::devices

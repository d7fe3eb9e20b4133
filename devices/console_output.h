// ConsoleOutput: where the guest's console bytes go (stdout, a file), such
// that the console can never block a vCPU, stall shutdown or kill tern.
//
// put() only appends to a bounded buffer under a mutex and returns; a writer
// thread of its own drains the buffer to the fd. Bytes are dropped, and
// counted, when:
//   - the buffer is full: the reader is slow or stalled (a terminal held
//     with ^S, a pipe nobody reads);
//   - the reader is gone: a write failed (EPIPE after `| head -1` exited,
//     a full disk); every later byte is dropped too;
//   - the cap is reached: at most max_bytes are ever taken (--serial file=
//     would otherwise grow without bound).
// The fd is written without blocking: a pipe or terminal is reopened
// through /proc/self/fd with O_NONBLOCK (a file description of our own, so
// the flag never leaks into the shell's stdout), and every write waits for
// POLLOUT first. SIGPIPE must be ignored by the process (vmm/main.cpp).
//
// Threads: put(), stats() and drain() from any thread (vCPU threads call
// put() through the UART). The writer thread is started by start() and is
// the only one that touches the fd; close() (or the destructor) stops and
// joins it after giving it up to `drain_timeout` to write what is still
// buffered (the rest is dropped and counted), so a stalled reader cannot
// hold up exit.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <thread>
#include <vector>

#include "base/error.h"
#include "base/event_fd.h"
#include "base/unique_fd.h"

namespace tern::devices {

struct ConsoleOutputOptions {
  size_t buffer_bytes = 1 << 20;  // taken but not yet written; beyond it bytes are dropped
  uint64_t max_bytes = 0;         // bytes ever taken; 0: no cap
  std::chrono::milliseconds drain_timeout{2000};  // at destruction, for what is buffered
};

struct ConsoleOutputStats {
  uint64_t written = 0;       // bytes the fd took
  uint64_t dropped_full = 0;  // the buffer was full: the reader is slow or stalled
  uint64_t dropped_gone = 0;  // a write failed (or the drain timed out): the reader is gone
  uint64_t dropped_cap = 0;   // past max_bytes
  int write_errno = 0;        // the failed write's errno, 0 if none failed
  uint64_t dropped() const { return dropped_full + dropped_gone + dropped_cap; }
};

class ConsoleOutput {
 public:
  [[nodiscard]] static SysResult<std::unique_ptr<ConsoleOutput>> start(UniqueFd fd,
                                                                       ConsoleOutputOptions options = {});
  ~ConsoleOutput();
  ConsoleOutput(const ConsoleOutput&) = delete;
  ConsoleOutput& operator=(const ConsoleOutput&) = delete;

  // Never blocks on the fd.
  void put(std::span<const uint8_t> bytes);
  ConsoleOutputStats stats() const;
  // Waits until every byte put so far was written or dropped; false if
  // `limit` passed first.
  bool drain(std::chrono::milliseconds limit);
  // Stops the writer after it wrote what is buffered, within drain_timeout
  // (the rest is dropped); later bytes are dropped. The destructor calls it.
  ConsoleOutputStats close();

 private:
  ConsoleOutput(UniqueFd fd, EventFd stop, ConsoleOutputOptions options)
      : fd_(std::move(fd)), stop_(std::move(stop)), options_(options) {}
  void loop(std::stop_token token);
  void write_out(std::span<const uint8_t> bytes, std::stop_token token);

  const UniqueFd fd_;  // writer thread only
  EventFd stop_;       // signalled by the stop callback: wakes a writer waiting for POLLOUT
  const ConsoleOutputOptions options_;
  mutable std::mutex mutex_;
  std::condition_variable_any wake_;     // the writer waits here for bytes
  std::condition_variable drained_;      // drain() waits here
  std::vector<uint8_t> buffer_;          // guarded by mutex_
  bool writing_ = false;                 // guarded by mutex_: the writer holds a chunk
  bool gone_ = false;                    // guarded by mutex_
  uint64_t taken_ = 0;                   // guarded by mutex_: bytes accepted into buffer_
  std::chrono::steady_clock::time_point drain_deadline_{};  // guarded by mutex_: set before the stop
  ConsoleOutputStats stats_;             // guarded by mutex_
  std::jthread thread_;                  // last: stopped and joined first
};

}  // namespace tern::devices

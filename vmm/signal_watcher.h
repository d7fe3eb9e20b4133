// SignalWatcher: turns SIGINT and SIGTERM into an orderly VM shutdown
// (disks flushed and closed, exit status 0) instead of a killed process,
// and passes SIGUSR1 on (tern prints every vCPU's registers).
//
// block_termination_signals() must run on the main thread before any other
// thread starts, so every thread inherits the mask and the signals are only
// ever consumed here, through a signalfd. The watcher's thread polls the
// signalfd and a stop eventfd; on a signal it calls `on_signal` once.
#pragma once

#include <functional>
#include <memory>
#include <thread>

#include "base/error.h"
#include "base/event_fd.h"
#include "base/unique_fd.h"

namespace tern::vmm {

[[nodiscard]] SysResult<void> block_termination_signals();

// SIGPIPE is ignored process-wide: a console reader that went away
// (`tern ... | head -1`) or an API client that hung up must cost a failed
// write (EPIPE), never the process with its disks open and dirty.
[[nodiscard]] SysResult<void> ignore_broken_pipes();

class SignalWatcher {
 public:
  [[nodiscard]] static SysResult<std::unique_ptr<SignalWatcher>> start(std::function<void(int signo)> on_signal);
  ~SignalWatcher();

 private:
  SignalWatcher(UniqueFd signal_fd, EventFd stop, std::function<void(int)> on_signal)
      : signal_fd_(std::move(signal_fd)), stop_(std::move(stop)), on_signal_(std::move(on_signal)) {}
  void loop(std::stop_token token);

  UniqueFd signal_fd_;
  EventFd stop_;
  std::function<void(int)> on_signal_;
  std::jthread thread_;  // last: stopped first
};

}  // namespace tern::vmm

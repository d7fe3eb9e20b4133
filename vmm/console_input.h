// ConsoleInput: feeds the host's stdin to the guest's UART (--serial tty),
// so a shell on ttyS0 can be used interactively.
//
// Its thread polls stdin and a stop eventfd; it ends at EOF on stdin, on a
// read error, or when stopped (the std::jthread's stop callback signals the
// eventfd; the destructor requests the stop and joins).
#pragma once

#include <memory>
#include <thread>

#include "base/error.h"
#include "base/event_fd.h"
#include "devices/serial.h"

namespace tern::vmm {

class ConsoleInput {
 public:
  [[nodiscard]] static SysResult<std::unique_ptr<ConsoleInput>> start(int input_fd, devices::Serial16550& uart);
  ~ConsoleInput();

 private:
  ConsoleInput(EventFd stop, int input_fd, devices::Serial16550& uart)
      : stop_(std::move(stop)), input_fd_(input_fd), uart_(uart) {}
  void loop(std::stop_token token);

  EventFd stop_;
  const int input_fd_;  // not owned (stdin)
  devices::Serial16550& uart_;
  std::jthread thread_;  // last: stopped before the rest goes
};

}  // namespace tern::vmm

#include "vmm/console_input.h"

#include <poll.h>
#include <unistd.h>

#include <cerrno>

#include "base/thread_sandbox.h"

namespace tern::vmm {

SysResult<std::unique_ptr<ConsoleInput>> ConsoleInput::start(int input_fd, devices::Serial16550& uart) {
  auto stop = EventFd::create();
  if (!stop) return std::unexpected(stop.error());
  std::unique_ptr<ConsoleInput> c(new ConsoleInput(std::move(*stop), input_fd, uart));
  // The console input thread: copies stdin bytes into the UART's receive
  // FIFO until EOF or stop.
  c->thread_ = start_thread(ThreadKind::ConsoleInput, [p = c.get()](std::stop_token token) { p->loop(token); });
  return c;
}

ConsoleInput::~ConsoleInput() {
  thread_.request_stop();
  if (thread_.joinable()) thread_.join();
}

void ConsoleInput::loop(std::stop_token token) {
  std::stop_callback wake(token, [this] { stop_.signal(); });
  while (!token.stop_requested()) {
    pollfd fds[2] = {{input_fd_, POLLIN, 0}, {stop_.fd(), POLLIN, 0}};
    int n = ::poll(fds, 2, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (fds[1].revents) return;
    if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
      uint8_t buf[256];
      ssize_t got = ::read(input_fd_, buf, sizeof buf);
      if (got < 0 && (errno == EINTR || errno == EAGAIN)) continue;
      if (got <= 0) return;  // EOF or error: no more input
      uart_.receive(std::span<const uint8_t>(buf, static_cast<size_t>(got)));
    }
  }
}

}  // namespace tern::vmm

#include "vmm/signal_watcher.h"

#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <cerrno>

#include "base/thread_sandbox.h"

namespace tern::vmm {

namespace {

sigset_t termination_set() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGUSR1);
  return set;
}

}  // namespace

SysResult<void> block_termination_signals() {
  sigset_t set = termination_set();
  if (int err = pthread_sigmask(SIG_BLOCK, &set, nullptr); err != 0) return std::unexpected(SysError{"pthread_sigmask", err});
  return {};
}

SysResult<void> ignore_broken_pipes() {
  struct sigaction sa{};
  sa.sa_handler = SIG_IGN;
  sigemptyset(&sa.sa_mask);
  if (::sigaction(SIGPIPE, &sa, nullptr) != 0) return std::unexpected(SysError::from_errno("sigaction"));
  return {};
}

SysResult<std::unique_ptr<SignalWatcher>> SignalWatcher::start(std::function<void(int)> on_signal) {
  sigset_t set = termination_set();
  int fd = ::signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
  if (fd < 0) return std::unexpected(SysError::from_errno("signalfd"));
  UniqueFd sfd(fd);
  auto stop = EventFd::create();
  if (!stop) return std::unexpected(stop.error());
  std::unique_ptr<SignalWatcher> w(new SignalWatcher(std::move(sfd), std::move(*stop), std::move(on_signal)));
  // The signal thread: waits for SIGINT/SIGTERM and asks the VM to shut down.
  w->thread_ = start_thread(ThreadKind::Signal, [p = w.get()](std::stop_token token) { p->loop(token); });
  return w;
}

SignalWatcher::~SignalWatcher() {
  thread_.request_stop();
  if (thread_.joinable()) thread_.join();
}

void SignalWatcher::loop(std::stop_token token) {
  std::stop_callback wake(token, [this] { stop_.signal(); });
  while (!token.stop_requested()) {
    pollfd fds[2] = {{signal_fd_.get(), POLLIN, 0}, {stop_.fd(), POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (fds[1].revents) return;
    signalfd_siginfo info;
    ssize_t n = ::read(signal_fd_.get(), &info, sizeof info);
    if (n == static_cast<ssize_t>(sizeof info)) {
      const int signo = static_cast<int>(info.ssi_signo);
      on_signal_(signo);
      if (signo != SIGUSR1) return;  // one shutdown request is enough; a second signal stays pending
    }
    if (n < 0 && errno != EINTR && errno != EAGAIN) return;
  }
}

}  // namespace tern::vmm

#include "devices/console_output.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <string>

#include "base/thread_sandbox.h"

namespace tern::devices {

namespace {

// A pipe's write of at most PIPE_BUF bytes after POLLOUT does not block
// even when the fd could not be made non-blocking.
constexpr size_t kChunk = PIPE_BUF;

// A file description of our own for a pipe or terminal, non-blocking; the
// original fd otherwise (a regular file never blocks for long; a socket or
// anything /proc cannot reopen keeps the POLLOUT-then-small-write rule).
UniqueFd non_blocking(UniqueFd fd) {
  struct stat st{};
  if (::fstat(fd.get(), &st) != 0 || !(S_ISFIFO(st.st_mode) || S_ISCHR(st.st_mode))) return fd;
  std::string self = "/proc/self/fd/" + std::to_string(fd.get());
  UniqueFd own(::open(self.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY));
  return own ? std::move(own) : std::move(fd);
}

}  // namespace

SysResult<std::unique_ptr<ConsoleOutput>> ConsoleOutput::start(UniqueFd fd, ConsoleOutputOptions options) {
  auto stop = EventFd::create();
  if (!stop) return std::unexpected(stop.error());
  auto out = std::unique_ptr<ConsoleOutput>(new ConsoleOutput(non_blocking(std::move(fd)), std::move(*stop), options));
  // The writer: drains the buffer to the fd until stopped (see the header).
  out->thread_ = start_thread(ThreadKind::ConsoleOutput, [raw = out.get()](std::stop_token token) { raw->loop(token); });
  return out;
}

ConsoleOutput::~ConsoleOutput() { close(); }

ConsoleOutputStats ConsoleOutput::close() {
  if (thread_.joinable()) {
    {
      std::lock_guard lock(mutex_);
      drain_deadline_ = std::chrono::steady_clock::now() + options_.drain_timeout;
    }
    thread_.request_stop();  // the writer finishes what is buffered, within the deadline
    thread_.join();
    std::lock_guard lock(mutex_);
    gone_ = true;  // nobody writes any more
  }
  return stats();
}

void ConsoleOutput::put(std::span<const uint8_t> bytes) {
  std::lock_guard lock(mutex_);
  if (gone_) {
    stats_.dropped_gone += bytes.size();
    return;
  }
  size_t n = bytes.size();
  if (options_.max_bytes != 0) {
    uint64_t room = options_.max_bytes - std::min(taken_, options_.max_bytes);
    if (n > room) {
      stats_.dropped_cap += n - room;
      n = static_cast<size_t>(room);
    }
  }
  size_t space = options_.buffer_bytes - std::min(buffer_.size(), options_.buffer_bytes);
  if (n > space) {
    stats_.dropped_full += n - space;
    n = space;
  }
  if (n == 0) return;
  buffer_.insert(buffer_.end(), bytes.begin(), bytes.begin() + static_cast<ptrdiff_t>(n));
  taken_ += n;
  wake_.notify_one();
}

ConsoleOutputStats ConsoleOutput::stats() const {
  std::lock_guard lock(mutex_);
  return stats_;
}

bool ConsoleOutput::drain(std::chrono::milliseconds limit) {
  std::unique_lock lock(mutex_);
  return drained_.wait_for(lock, limit, [&] { return buffer_.empty() && !writing_; });
}

void ConsoleOutput::loop(std::stop_token token) {
  std::stop_callback wake(token, [this] { stop_.signal(); });
  std::vector<uint8_t> chunk;
  for (;;) {
    {
      std::unique_lock lock(mutex_);
      writing_ = false;
      drained_.notify_all();
      wake_.wait(lock, token, [&] { return !buffer_.empty(); });
      if (buffer_.empty()) return;  // stopped with nothing left to write
      chunk.swap(buffer_);
      writing_ = true;
    }
    write_out(chunk, token);
    chunk.clear();
  }
}

void ConsoleOutput::write_out(std::span<const uint8_t> bytes, std::stop_token token) {
  auto give_up = [&](int err) {
    std::lock_guard lock(mutex_);
    gone_ = true;
    if (stats_.write_errno == 0) stats_.write_errno = err;
    stats_.dropped_gone += bytes.size() + buffer_.size();
    buffer_.clear();
  };
  while (!bytes.empty()) {
    // Until stopped, wait for the fd or the stop; once stopped, for the fd
    // until the drain deadline.
    int timeout = -1;
    if (token.stop_requested()) {
      std::lock_guard lock(mutex_);
      auto left = std::chrono::ceil<std::chrono::milliseconds>(drain_deadline_ - std::chrono::steady_clock::now());
      timeout = static_cast<int>(std::max<int64_t>(left.count(), 0));
    }
    pollfd p[2] = {{fd_.get(), POLLOUT, 0}, {stop_.fd(), POLLIN, 0}};
    int n = ::poll(p, token.stop_requested() ? 1 : 2, timeout);
    if (n < 0) {
      if (errno == EINTR) continue;
      return give_up(errno);
    }
    if (n == 0) return give_up(ETIMEDOUT);  // the reader stalled through the drain deadline
    if (p[0].revents == 0) continue;        // the stop: go on under the deadline
    ssize_t w = ::write(fd_.get(), bytes.data(), std::min(bytes.size(), kChunk));
    if (w < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return give_up(errno);  // EPIPE: the reader is gone; ENOSPC...
    }
    bytes = bytes.subspan(static_cast<size_t>(w));
    std::lock_guard lock(mutex_);
    stats_.written += static_cast<uint64_t>(w);
  }
}

}  // namespace tern::devices

// RateLimitedLog: guest misbehaviour is logged, but a hostile guest must not
// be able to flood the host's log. At most `burst` lines per `period`; the
// number of suppressed lines is reported with the next line that gets out.
//
// Threads: any (internally locked).
#pragma once

#include <chrono>
#include <cstdio>
#include <mutex>
#include <string_view>

namespace tern::devices {

class RateLimitedLog {
 public:
  explicit RateLimitedLog(unsigned burst = 10,
                          std::chrono::steady_clock::duration period = std::chrono::seconds(5))
      : burst_(burst), period_(period) {}

  void log(std::string_view who, std::string_view what) {
    std::lock_guard lock(mutex_);
    auto now = std::chrono::steady_clock::now();
    if (now - window_start_ >= period_) {
      window_start_ = now;
      used_ = 0;
    }
    if (used_ >= burst_) {
      ++suppressed_;
      return;
    }
    ++used_;
    if (suppressed_ != 0) {
      std::fprintf(stderr, "tern: %.*s: %.*s (%u similar messages suppressed)\n",
                   static_cast<int>(who.size()), who.data(), static_cast<int>(what.size()),
                   what.data(), suppressed_);
      suppressed_ = 0;
    } else {
      std::fprintf(stderr, "tern: %.*s: %.*s\n", static_cast<int>(who.size()), who.data(),
                   static_cast<int>(what.size()), what.data());
    }
  }

 private:
  const unsigned burst_;
  const std::chrono::steady_clock::duration period_;
  std::mutex mutex_;
  std::chrono::steady_clock::time_point window_start_{};  // guarded by mutex_
  unsigned used_ = 0;                                     // guarded by mutex_
  unsigned suppressed_ = 0;                               // guarded by mutex_
};

}  // namespace tern::devices

#include "block/io/wait.h"

#include <poll.h>

#include <cerrno>

namespace tern::block::io {

Result<bool> wait_for_completions(const IoContext& ctx, int timeout_ms) {
  for (;;) {
    pollfd pfd{ctx.completion_fd(), POLLIN, 0};
    int n = ::poll(&pfd, 1, timeout_ms);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail(Errc::Internal, errno, "poll on a completion eventfd");
    return n > 0;
  }
}

Result<bool> collect(IoContext& ctx, size_t count, std::vector<Completion>& out, int timeout_ms) {
  const size_t before = out.size();
  ctx.drain(out);
  while (out.size() - before < count) {
    auto ready = wait_for_completions(ctx, timeout_ms);
    if (!ready) return std::unexpected(ready.error());
    if (!*ready) return false;
    ctx.drain(out);
  }
  return true;
}

Result<void> run_to_completion(IoContext& ctx, const Request& request) {
  if (auto r = ctx.submit(request); !r) return r;
  std::vector<Completion> done;
  if (auto r = collect(ctx, 1, done); !r) return std::unexpected(r.error());
  return done.front().status;
}

}  // namespace tern::block::io

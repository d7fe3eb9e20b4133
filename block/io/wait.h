// Waiting on an IoContext from a thread that has nothing else to do (the
// converter, the backing chain, tern-img, benchmarks and tests): the one
// submit-and-wait loop of the block layer. The device's queue runner waits
// in its own event loop instead.
#pragma once

#include <vector>

#include "block/disk.h"

namespace tern::block::io {

// Waits until `ctx` has completions to drain or `timeout_ms` passed (-1:
// no limit). False on timeout; a failing poll(2) is an error.
[[nodiscard]] Result<bool> wait_for_completions(const IoContext& ctx, int timeout_ms = -1);

// Drains `ctx` into `out` until it holds at least `count` completions,
// waiting as needed, each wait at most `timeout_ms`. False when a wait
// timed out first.
[[nodiscard]] Result<bool> collect(IoContext& ctx, size_t count, std::vector<Completion>& out,
                                   int timeout_ms = -1);

// Submits one request and waits for its completion; its status. Only for
// a context with nothing else in flight.
[[nodiscard]] Result<void> run_to_completion(IoContext& ctx, const Request& request);

}  // namespace tern::block::io

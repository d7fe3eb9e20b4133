// BlockCounters: one disk's I/O counters, as the device counts them and the
// API reports them (GET vm.counters). The fields are listed once, in
// TERN_BLOCK_COUNTERS; the struct and for_each_block_counter are generated
// from that list, so every copy (the device's atomics to a snapshot, a
// snapshot to JSON) goes field by field by name, never by position.
//
//   read_ops, read_bytes ... write_zeroes_bytes   completed requests and bytes
//   errors              every request answered IOERR or UNSUPP; the sum of:
//   errors_invalid      refused by the device or the backend as malformed: a
//                       bad header or segment, past the end, unaligned, a
//                       write to a read-only disk
//   errors_unsupported  UNSUPP: an unknown request type or flag, or an
//                       operation the backend does not do
//   errors_io           the host's I/O failed (EIO, a short transfer, a
//                       failed submit)
//   errors_no_space     the host's file system is full (ENOSPC, EDQUOT)
//   errors_image        the image's metadata is corrupt or unreadable (QCOW2)
//   errors_other        anything else the backend reported
//   rejected_<rule>     requests the device answered itself with an error,
//                       by the rule they broke (devices/virtio/blk/request.h:
//                       TERN_BLK_REJECTIONS; each is also in errors_invalid
//                       or errors_unsupported, except no_status_byte, which
//                       cannot be answered)
#pragma once

#include <atomic>
#include <cstdint>
#include <string_view>

#define TERN_BLOCK_COUNTERS(X)                                                                  \
  X(read_ops) X(read_bytes) X(write_ops) X(write_bytes) X(flush_ops) X(discard_ops)              \
  X(discard_bytes) X(write_zeroes_ops) X(write_zeroes_bytes) X(errors) X(errors_invalid)         \
  X(errors_unsupported) X(errors_io) X(errors_no_space) X(errors_image) X(errors_other)          \
  X(rejected_no_status_byte) X(rejected_beyond_seg_limits) X(rejected_short_header)              \
  X(rejected_unaligned_data) X(rejected_too_large) X(rejected_past_capacity) X(rejected_read_only) \
  X(rejected_bad_segment) X(rejected_too_many_sectors) X(rejected_unsupported_type)               \
  X(rejected_not_offered) X(rejected_unsupported_flags)

namespace tern {

template <class T>
struct BasicBlockCounters {
#define TERN_BLOCK_COUNTER_FIELD(name) T name{};
  TERN_BLOCK_COUNTERS(TERN_BLOCK_COUNTER_FIELD)
#undef TERN_BLOCK_COUNTER_FIELD
};

using BlockCounters = BasicBlockCounters<uint64_t>;
using AtomicBlockCounters = BasicBlockCounters<std::atomic<uint64_t>>;

// Calls f(name, field) for every counter; `field(c)` is that counter of any
// BasicBlockCounters c, e.g. field(snapshot) = field(atomics).load().
template <class F>
constexpr void for_each_block_counter(F&& f) {
#define TERN_BLOCK_COUNTER_VISIT(name) f(std::string_view(#name), [](auto& c) -> auto& { return c.name; });
  TERN_BLOCK_COUNTERS(TERN_BLOCK_COUNTER_VISIT)
#undef TERN_BLOCK_COUNTER_VISIT
}

inline BlockCounters snapshot(const AtomicBlockCounters& counters) {
  BlockCounters out;
  for_each_block_counter([&](std::string_view, auto field) {
    field(out) = field(counters).load(std::memory_order_relaxed);
  });
  return out;
}

}  // namespace tern

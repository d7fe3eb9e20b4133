// Parsing one virtio-blk request (5.2.6) from its descriptor chain, on its
// own: the chain's buffers and the device's limits in, and out either a
// request for the backend, an answer the device gives at once (GET_ID, a
// flush on a read-only disk), or the rule the request broke, with the
// status the guest gets for it. BlkQueue (blk/device.cpp) drives it; the
// tests call it directly (tests/devices/virtio/blk_request_test.cpp).
#pragma once

#include <sys/uio.h>

#include <cstdint>
#include <span>
#include <string_view>
#include <variant>
#include <vector>

#include "base/block_counters.h"
#include "block/disk.h"
#include "devices/virtio/virtqueue.h"

namespace tern::devices {

// virtio-blk feature bits (5.2.3).
inline constexpr uint64_t kBlkFSizeMax = 1ull << 1;
inline constexpr uint64_t kBlkFSegMax = 1ull << 2;
inline constexpr uint64_t kBlkFRo = 1ull << 5;
inline constexpr uint64_t kBlkFBlkSize = 1ull << 6;
inline constexpr uint64_t kBlkFFlush = 1ull << 9;
inline constexpr uint64_t kBlkFMq = 1ull << 12;
inline constexpr uint64_t kBlkFDiscard = 1ull << 13;
inline constexpr uint64_t kBlkFWriteZeroes = 1ull << 14;

// Request types and status values (5.2.6).
inline constexpr uint32_t kBlkTIn = 0;
inline constexpr uint32_t kBlkTOut = 1;
inline constexpr uint32_t kBlkTFlush = 4;
inline constexpr uint32_t kBlkTGetId = 8;
inline constexpr uint32_t kBlkTDiscard = 11;
inline constexpr uint32_t kBlkTWriteZeroes = 13;
inline constexpr uint8_t kBlkSOk = 0;
inline constexpr uint8_t kBlkSIoErr = 1;
inline constexpr uint8_t kBlkSUnsupp = 2;
inline constexpr size_t kBlkIdBytes = 20;  // VIRTIO_BLK_ID_BYTES
inline constexpr uint32_t kBlkConfigSize = 60;

// Request-size limits (5.2.4, docs/virtio.md "Request size"). size_max bounds
// each segment; seg_max counts data segments (the header and status
// descriptors aside, as QEMU and Linux count them) and is at most IOV_MAX,
// the most iovecs one preadv/pwritev or AIO iocb takes. Together they bound
// a request to block::kMaxTransferBytes.
inline constexpr uint32_t kBlkSizeMax = 1u << 20;
inline constexpr uint32_t kBlkMaxSegments = 1024;
static_assert(uint64_t{kBlkSizeMax} * kBlkMaxSegments <= block::kMaxTransferBytes);
constexpr uint32_t blk_seg_max(uint16_t queue_size) {
  uint32_t ring = queue_size > 3 ? queue_size - 2u : 1u;
  return ring < kBlkMaxSegments ? ring : kBlkMaxSegments;
}

// What parsing a request depends on: the disk's capacity now and what the
// device offered.
struct BlkParseLimits {
  uint64_t capacity_sectors = 0;
  uint32_t seg_max = 1;  // data segments per request (5.2.4)
  uint32_t max_discard_sectors = 0;
  uint32_t max_write_zeroes_sectors = 0;
  uint64_t features = 0;  // offered: discard and write-zeroes come from here
  bool read_only = false;
};

// Every rule a request can break, each with the status the guest gets and
// the counter that counts it (vm.counters: rejected_<name>).
#define TERN_BLK_REJECTIONS(X)                                                              \
  X(no_status_byte, kBlkSIoErr)    /* no device-writable byte: nowhere to answer */         \
  X(beyond_seg_limits, kBlkSIoErr) /* more than seg_max + 2 buffers, or one past size_max */ \
  X(short_header, kBlkSIoErr)      /* fewer than 16 readable header bytes */                 \
  X(unaligned_data, kBlkSIoErr)    /* data not a whole number of sectors */                  \
  X(too_large, kBlkSIoErr)         /* data past seg_max x size_max */                        \
  X(past_capacity, kBlkSIoErr)     /* a sector range past the end of the disk */             \
  X(read_only, kBlkSIoErr)         /* a write, discard or write-zeroes on a read-only disk */ \
  X(bad_segment, kBlkSIoErr)       /* a discard/write-zeroes payload other than one segment */ \
  X(too_many_sectors, kBlkSIoErr)  /* a segment past max_discard/write_zeroes_sectors */     \
  X(unsupported_type, kBlkSUnsupp) /* a type the device does not know */                     \
  X(not_offered, kBlkSUnsupp)      /* discard or write-zeroes, not offered */                \
  X(unsupported_flags, kBlkSUnsupp) /* unmap on a discard, or an unknown flag */

enum class BlkRejection : uint8_t {
#define TERN_BLK_REJECTION_ENUM(name, status) name,
  TERN_BLK_REJECTIONS(TERN_BLK_REJECTION_ENUM)
#undef TERN_BLK_REJECTION_ENUM
};

// The status byte value (kBlkSIoErr or kBlkSUnsupp), the name, and the
// counter of a rejection.
uint8_t blk_rejection_status(BlkRejection r);
const char* blk_rejection_name(BlkRejection r);
std::atomic<uint64_t>& blk_rejection_counter(AtomicBlockCounters& counters, BlkRejection r);

// For the backend: req.iov points into the vector given to parse.
struct BlkBackendRequest {
  block::Request request;
  uint64_t bytes = 0;     // data or range bytes, for counters and logs
  uint32_t read_len = 0;  // what a successful read puts into the chain
};

// Answered by the device itself: OK with `written` data bytes.
struct BlkAnswer {
  uint32_t written = 0;
  bool flush = false;  // a flush on a read-only disk: counted as one
};

using BlkParsed = std::variant<BlkBackendRequest, BlkAnswer, BlkRejection>;

// The status byte of a chain (5.2.6): the last byte of its last
// device-writable buffer; empty when there is none, so nowhere to answer.
std::span<uint8_t> blk_status_byte(std::span<const ChainBuffer> buffers);

// Parses the request in `buffers`. GET_ID writes the serial into the chain
// here; no_status_byte means the chain cannot be answered at all. `iov` receives the data buffers
// of a read or write.
BlkParsed parse_blk_request(std::span<const ChainBuffer> buffers, const BlkParseLimits& limits,
                            std::string_view serial, uint64_t cookie, std::vector<iovec>& iov);

}  // namespace tern::devices

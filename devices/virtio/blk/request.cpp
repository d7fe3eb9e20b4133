#include "devices/virtio/blk/request.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <optional>

namespace tern::devices {
namespace {

constexpr uint64_t kSector = 512;

struct RejectionRow {
  uint8_t status;
  const char* name;
  std::atomic<uint64_t> AtomicBlockCounters::*counter;
};

constexpr std::array kRejections = {
#define TERN_BLK_REJECTION_ROW(name, status) RejectionRow{status, #name, &AtomicBlockCounters::rejected_##name},
    TERN_BLK_REJECTIONS(TERN_BLK_REJECTION_ROW)
#undef TERN_BLK_REJECTION_ROW
};

const RejectionRow& row(BlkRejection r) { return kRejections[static_cast<size_t>(r)]; }

// The device-readable or device-writable half of a chain, seen as one byte
// stream: 2.6.4 says the device must make no assumption about how the driver
// frames a request into descriptors.
class ByteStream {
 public:
  void add(std::span<uint8_t> part) {
    if (part.empty()) return;
    parts_.push_back(part);
    total_ += part.size();
  }
  uint64_t size() const { return total_; }

  // Copies [offset, offset + out.size()) out; false when past the end.
  bool read(uint64_t offset, std::span<uint8_t> out) const {
    return walk(offset, out.size(), [&](std::span<uint8_t> piece, uint64_t done) {
      std::memcpy(out.data() + done, piece.data(), piece.size());
    });
  }
  bool write(uint64_t offset, std::span<const uint8_t> in) const {
    return walk(offset, in.size(), [&](std::span<uint8_t> piece, uint64_t done) {
      std::memcpy(piece.data(), in.data() + done, piece.size());
    });
  }
  // iovecs for [offset, offset + length), pointing into guest memory.
  bool iovecs(uint64_t offset, uint64_t length, std::vector<iovec>& out) const {
    out.clear();
    return walk(offset, length, [&](std::span<uint8_t> piece, uint64_t) {
      out.push_back(iovec{piece.data(), piece.size()});
    });
  }

 private:
  template <class F>
  bool walk(uint64_t offset, uint64_t length, F&& f) const {
    if (offset > total_ || length > total_ - offset) return false;
    uint64_t done = 0;
    for (std::span<uint8_t> p : parts_) {
      if (done == length) break;
      if (offset >= p.size()) {
        offset -= p.size();
        continue;
      }
      uint64_t n = std::min<uint64_t>(p.size() - offset, length - done);
      f(p.subspan(offset, n), done);
      done += n;
      offset = 0;
    }
    return true;
  }

  std::vector<std::span<uint8_t>> parts_;
  uint64_t total_ = 0;
};

template <class T>
T load_le(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

bool in_capacity(const BlkParseLimits& l, uint64_t sector, uint64_t bytes) {
  uint64_t sectors = bytes / kSector;
  return sector <= l.capacity_sectors && sectors <= l.capacity_sectors - sector;
}

// 5.2.4: the driver keeps each request within seg_max segments of at most
// size_max bytes each. Segments are what the chain carries besides the
// header and the status byte, so a chain may have seg_max + 2 descriptors,
// none longer than size_max. Past that the request gets IOERR (5.2.6.1 lets
// the device fail a request it cannot serve); the queue itself is fine.
bool within_limits(std::span<const ChainBuffer> buffers, uint32_t seg_max) {
  if (buffers.size() > uint64_t{seg_max} + 2) return false;
  return std::ranges::all_of(buffers, [](const ChainBuffer& b) { return b.bytes.size() <= kBlkSizeMax; });
}

// A read's or write's data: whole sectors, within the request-size limit
// and the disk.
std::optional<BlkRejection> check_data(const BlkParseLimits& l, uint64_t sector, uint64_t bytes) {
  if (bytes % kSector != 0) return BlkRejection::unaligned_data;
  if (bytes > uint64_t{l.seg_max} * kBlkSizeMax) return BlkRejection::too_large;
  if (!in_capacity(l, sector, bytes)) return BlkRejection::past_capacity;
  return std::nullopt;
}

}  // namespace

uint8_t blk_rejection_status(BlkRejection r) { return row(r).status; }
const char* blk_rejection_name(BlkRejection r) { return row(r).name; }
std::atomic<uint64_t>& blk_rejection_counter(AtomicBlockCounters& counters, BlkRejection r) {
  return counters.*row(r).counter;
}

std::span<uint8_t> blk_status_byte(std::span<const ChainBuffer> buffers) {
  for (auto b = buffers.rbegin(); b != buffers.rend(); ++b) {
    if (b->device_writable && !b->bytes.empty()) return b->bytes.last(1);
  }
  return {};
}

BlkParsed parse_blk_request(std::span<const ChainBuffer> buffers, const BlkParseLimits& limits,
                            std::string_view serial, uint64_t cookie, std::vector<iovec>& iov) {
  ByteStream in, out;  // device-readable, device-writable
  for (const ChainBuffer& b : buffers) (b.device_writable ? out : in).add(b.bytes);
  // 5.2.6: every request ends in a writable status byte.
  if (out.size() == 0) return BlkRejection::no_status_byte;
  if (!within_limits(buffers, limits.seg_max)) return BlkRejection::beyond_seg_limits;
  const uint64_t data_out = out.size() - 1;  // writable bytes before the status byte

  uint8_t header[16];
  if (!in.read(0, header)) return BlkRejection::short_header;
  const uint32_t type = load_le<uint32_t>(header);
  const uint64_t sector = load_le<uint64_t>(header + 8);
  const uint64_t data_in = in.size() - sizeof header;

  BlkBackendRequest r;
  r.request.cookie = cookie;
  switch (type) {
    case kBlkTIn:
      if (auto bad = check_data(limits, sector, data_out)) return *bad;
      out.iovecs(0, data_out, iov);
      r.request.op = block::Op::Read;
      r.request.offset = sector * kSector;
      r.request.iov = iov;
      r.bytes = data_out;
      r.read_len = static_cast<uint32_t>(data_out);
      return r;
    case kBlkTOut:
      // 5.2.6.2: "A device MUST set the status byte to VIRTIO_BLK_S_IOERR
      // for a write request if the VIRTIO_BLK_F_RO feature if offered, and
      // MUST NOT write any data."
      if (limits.read_only) return BlkRejection::read_only;
      if (auto bad = check_data(limits, sector, data_in)) return *bad;
      in.iovecs(sizeof header, data_in, iov);
      r.request.op = block::Op::Write;
      r.request.offset = sector * kSector;
      r.request.iov = iov;
      r.bytes = data_in;
      return r;
    case kBlkTFlush:
      // Nothing can be dirty on a read-only disk; flush still succeeds.
      if (limits.read_only) return BlkAnswer{0, true};
      r.request.op = block::Op::Flush;
      return r;
    case kBlkTGetId: {
      // 5.2.6: the ID string is 20 bytes, NUL-padded; allowed on read-only
      // disks too.
      uint8_t id[kBlkIdBytes] = {};
      std::memcpy(id, serial.data(), std::min(serial.size(), kBlkIdBytes));
      size_t n = std::min<uint64_t>(data_out, kBlkIdBytes);
      out.write(0, std::span<const uint8_t>(id, n));
      return BlkAnswer{static_cast<uint32_t>(n), false};
    }
    case kBlkTDiscard:
    case kBlkTWriteZeroes: {
      const bool discard = type == kBlkTDiscard;
      if (!(limits.features & (discard ? kBlkFDiscard : kBlkFWriteZeroes))) return BlkRejection::not_offered;
      // 5.2.6.2: write-type requests on a read-only device get IOERR.
      if (limits.read_only) return BlkRejection::read_only;
      // We advertise max_*_seg = 1: exactly one segment.
      uint8_t seg[16];
      if (data_in != sizeof seg || !in.read(sizeof header, seg)) return BlkRejection::bad_segment;
      const uint64_t seg_sector = load_le<uint64_t>(seg);
      const uint32_t num = load_le<uint32_t>(seg + 8);
      const uint32_t flags = load_le<uint32_t>(seg + 12);
      // 5.2.6.2: UNSUPP for discard with the unmap flag, and for any
      // unknown flag.
      if ((flags & ~1u) != 0 || (discard && (flags & 1u))) return BlkRejection::unsupported_flags;
      const uint32_t max = discard ? limits.max_discard_sectors : limits.max_write_zeroes_sectors;
      if (num > max) return BlkRejection::too_many_sectors;
      if (!in_capacity(limits, seg_sector, uint64_t{num} * kSector)) return BlkRejection::past_capacity;
      r.request.op = discard ? block::Op::Discard : block::Op::WriteZeroes;
      r.request.offset = seg_sector * kSector;
      r.request.length = uint64_t{num} * kSector;
      r.request.may_unmap = (flags & 1u) != 0;
      r.bytes = r.request.length;
      return r;
    }
    default:
      return BlkRejection::unsupported_type;
  }
}

}  // namespace tern::devices

#include "devices/virtio/virtio_blk.h"


#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <utility>

#include "block/disk.h"
#include "devices/virtio/blk_errors.h"
#include "devices/virtio/queue_runner.h"
#include "devices/virtio/rate_limited_log.h"

namespace tern::devices {

namespace {

constexpr uint64_t kSector = 512;
constexpr uint32_t kMaxDiscardSectors = 0x3fffff;  // 2 GiB per request

RateLimitedLog& request_log() {
  static RateLimitedLog log;
  return log;
}

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
  std::span<uint8_t> last_byte() const {
    return parts_.empty() ? std::span<uint8_t>() : parts_.back().last(1);
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

// One guest request from parse to completion. It owns the chain; its
// destructor writes the status byte and then lets the chain go back to the
// used ring, so every request is answered exactly once, on every path.
class BlkRequest {
 public:
  BlkRequest(DescriptorChain chain, std::span<uint8_t> status_byte)
      : chain_(std::move(chain)), status_byte_(status_byte) {}
  // Moving hands the duty to answer over; the moved-from object is inert.
  BlkRequest(BlkRequest&& other) noexcept
      : op(other.op),
        offset(other.offset),
        bytes(other.bytes),
        read_len(other.read_len),
        chain_(std::move(other.chain_)),
        status_byte_(std::exchange(other.status_byte_, {})),
        status_(other.status_),
        used_len_(other.used_len_) {}
  BlkRequest& operator=(BlkRequest&&) = delete;
  ~BlkRequest() {
    if (status_byte_.empty()) return;
    status_byte_[0] = status_;  // guest memory, validated when popped
    chain_.set_used_len(used_len_);
  }  // chain_ returns itself after this body

  void finish(uint8_t status, uint32_t data_written = 0) {
    status_ = status;
    used_len_ = data_written + 1;  // the status byte counts (2.7.8 "len")
  }

  block::Op op = block::Op::Read;
  uint64_t offset = 0;  // on the disk, for the log line of a failure
  uint64_t bytes = 0;
  uint32_t read_len = 0;  // data bytes a successful read puts into the chain

 private:
  DescriptorChain chain_;
  std::span<uint8_t> status_byte_;
  uint8_t status_ = kBlkSIoErr;
  uint32_t used_len_ = 1;
};

}  // namespace

// One queue of the disk, as the QueueRunner drives it. Each request goes
// through three steps (Firecracker's split): parse() reads the chain into a
// block::Request (or answers it at once), process() hands it to the
// backend's IoContext, finish() turns the backend's verdict into the status
// byte when complete() drains it.
class BlkQueue final : public QueueHandler {
 public:
  BlkQueue(VirtioBlk::Shared& shared, std::unique_ptr<block::IoContext> ctx, uint16_t size)
      : shared_(shared), ctx_(std::move(ctx)), slots_(size) {}

  void handle(DescriptorChain chain) override {
    auto parsed = parse(std::move(chain));
    if (parsed) process(std::move(parsed->first), parsed->second);
  }
  int completion_fd() const override { return ctx_->completion_fd(); }
  bool complete() override {
    completions_.clear();
    ctx_->drain(completions_);
    for (block::Completion& c : completions_) {
      if (c.cookie >= slots_.size() || !slots_[c.cookie]) std::abort();  // backend broke its contract
      finish(*slots_[c.cookie], c.status);
      slots_[c.cookie].reset();  // status byte, then used ring
      --pending_;
    }
    return !completions_.empty();
  }
  void cancel() override { ctx_->cancel(); }
  uint32_t in_flight() const override { return pending_; }

 private:
  // The backend's verdict: counted by kind and, when it failed, logged
  // with the backend's message (rate-limited per kind); the guest sees
  // IOERR (5.2.6).
  void finish(BlkRequest& r, const block::Result<void>& status) {
    auto& k = shared_.counters;
    if (!status) {
      count_blk_error(k, blk_error_kind(status.error()));
      shared_.error_log.failed(shared_.log_name, r.op, r.offset, r.bytes, status.error());
      r.finish(kBlkSIoErr);
      return;
    }
    switch (r.op) {
      case block::Op::Read:
        k.read_ops.fetch_add(1, std::memory_order_relaxed);
        k.read_bytes.fetch_add(r.bytes, std::memory_order_relaxed);
        break;
      case block::Op::Write:
        k.write_ops.fetch_add(1, std::memory_order_relaxed);
        k.write_bytes.fetch_add(r.bytes, std::memory_order_relaxed);
        break;
      case block::Op::Flush:
        k.flush_ops.fetch_add(1, std::memory_order_relaxed);
        break;
      case block::Op::Discard:
        k.discard_ops.fetch_add(1, std::memory_order_relaxed);
        k.discard_bytes.fetch_add(r.bytes, std::memory_order_relaxed);
        break;
      case block::Op::WriteZeroes:
        k.write_zeroes_ops.fetch_add(1, std::memory_order_relaxed);
        k.write_zeroes_bytes.fetch_add(r.bytes, std::memory_order_relaxed);
        break;
    }
    r.finish(kBlkSOk, r.read_len);
  }

  // Completes a request now with `status` (the request object answers it).
  // The device refused it: malformed (IOERR) or not supported (UNSUPP).
  std::nullopt_t answer(BlkRequest& r, uint8_t status) {
    if (status != kBlkSOk) {
      count_blk_error(shared_.counters, status == kBlkSUnsupp ? BlkErrorKind::Unsupported : BlkErrorKind::Invalid);
    }
    r.finish(status);
    return std::nullopt;
  }

  bool in_capacity(uint64_t sector, uint64_t bytes) const {
    uint64_t cap = shared_.capacity.load(std::memory_order_acquire);
    uint64_t sectors = bytes / kSector;
    return sector <= cap && sectors <= cap - sector;
  }

  // 5.2.4: the driver keeps each request within seg_max segments of at most
  // size_max bytes each. Segments are what the chain carries besides the
  // header and the status byte, so a chain may have seg_max + 2
  // descriptors, none longer than size_max. Past that the request gets IOERR
  // (5.2.6.1 lets the device fail a request it cannot serve); the queue
  // itself is fine.
  bool within_limits(std::span<const ChainBuffer> buffers) const {
    if (buffers.size() > uint64_t{shared_.seg_max} + 2) return false;
    return std::ranges::all_of(buffers, [](const ChainBuffer& b) { return b.bytes.size() <= kBlkSizeMax; });
  }
  uint64_t max_data_bytes() const { return uint64_t{shared_.seg_max} * kBlkSizeMax; }

  // A parsed request: what it owes the guest and what the backend must do.
  using Parsed = std::pair<BlkRequest, block::Request>;

  // Reads the chain; answers a request it can finish without the backend
  // (malformed, unsupported, GET_ID, a read-only flush) and returns nullopt.
  std::optional<Parsed> parse(DescriptorChain chain) {
    ByteStream in, out;  // device-readable, device-writable
    for (const ChainBuffer& b : chain.buffers()) (b.device_writable ? out : in).add(b.bytes);
    if (out.size() == 0) {
      // 5.2.6: every request ends in a writable status byte. Without one
      // there is nowhere to answer; give the chain back untouched.
      request_log().log("virtio-blk", "request without a status byte");
      return std::nullopt;
    }
    uint16_t head = chain.head();
    bool within = within_limits(chain.buffers());
    BlkRequest local(std::move(chain), out.last_byte());
    uint64_t data_out = out.size() - 1;  // writable bytes before the status byte
    if (!within) {
      request_log().log("virtio-blk", "request beyond seg_max or size_max");
      return answer(local, kBlkSIoErr);
    }

    uint8_t header[16];
    if (!in.read(0, header)) return answer(local, kBlkSIoErr);
    uint32_t type = load_le<uint32_t>(header);
    uint64_t sector = load_le<uint64_t>(header + 8);
    uint64_t data_in = in.size() - sizeof header;

    block::Request req;
    req.cookie = head;
    switch (type) {
      case kBlkTIn:
        if (data_out % kSector != 0 || data_out > max_data_bytes() || !in_capacity(sector, data_out) ||
            !out.iovecs(0, data_out, iov_)) {
          return answer(local, kBlkSIoErr);
        }
        req.op = block::Op::Read;
        req.offset = sector * kSector;
        req.iov = iov_;
        local.bytes = data_out;
        local.read_len = static_cast<uint32_t>(data_out);
        break;
      case kBlkTOut:
        // 5.2.6.2: "A device MUST set the status byte to VIRTIO_BLK_S_IOERR
        // for a write request if the VIRTIO_BLK_F_RO feature if offered, and
        // MUST NOT write any data."
        if (shared_.read_only) return answer(local, kBlkSIoErr);
        if (data_in % kSector != 0 || data_in > max_data_bytes() || !in_capacity(sector, data_in) ||
            !in.iovecs(sizeof header, data_in, iov_)) {
          return answer(local, kBlkSIoErr);
        }
        req.op = block::Op::Write;
        req.offset = sector * kSector;
        req.iov = iov_;
        local.bytes = data_in;
        break;
      case kBlkTFlush:
        // Nothing can be dirty on a read-only disk; flush still succeeds.
        if (shared_.read_only) {
          shared_.counters.flush_ops.fetch_add(1, std::memory_order_relaxed);
          return answer(local, kBlkSOk);
        }
        req.op = block::Op::Flush;
        break;
      case kBlkTGetId: {
        // 5.2.6: the ID string is 20 bytes, NUL-padded; allowed on
        // read-only disks too.
        uint8_t id[kBlkIdBytes] = {};
        std::memcpy(id, shared_.serial.data(), std::min(shared_.serial.size(), kBlkIdBytes));
        size_t n = std::min<uint64_t>(data_out, kBlkIdBytes);
        if (!out.write(0, std::span<const uint8_t>(id, n))) return answer(local, kBlkSIoErr);
        local.finish(kBlkSOk, static_cast<uint32_t>(n));
        return std::nullopt;
      }
      case kBlkTDiscard:
      case kBlkTWriteZeroes: {
        bool discard = type == kBlkTDiscard;
        if (!(shared_.features & (discard ? kBlkFDiscard : kBlkFWriteZeroes))) {
          return answer(local, kBlkSUnsupp);
        }
        // 5.2.6.2: write-type requests on a read-only device get IOERR.
        if (shared_.read_only) return answer(local, kBlkSIoErr);
        // We advertise max_*_seg = 1: exactly one segment.
        uint8_t seg[16];
        if (data_in != sizeof seg || !in.read(sizeof header, seg)) {
          return answer(local, kBlkSIoErr);
        }
        uint64_t seg_sector = load_le<uint64_t>(seg);
        uint32_t num = load_le<uint32_t>(seg + 8);
        uint32_t flags = load_le<uint32_t>(seg + 12);
        // 5.2.6.2: UNSUPP for discard with the unmap flag, and for any
        // unknown flag.
        if ((flags & ~1u) != 0 || (discard && (flags & 1u))) return answer(local, kBlkSUnsupp);
        uint32_t max = discard ? shared_.max_discard_sectors : shared_.max_write_zeroes_sectors;
        if (num > max || !in_capacity(seg_sector, uint64_t{num} * kSector)) {
          return answer(local, kBlkSIoErr);
        }
        req.op = discard ? block::Op::Discard : block::Op::WriteZeroes;
        req.offset = seg_sector * kSector;
        req.length = uint64_t{num} * kSector;
        req.may_unmap = (flags & 1u) != 0;
        local.bytes = req.length;
        break;
      }
      default:
        return answer(local, kBlkSUnsupp);
    }
    local.op = req.op;
    local.offset = req.offset;
    return std::optional<Parsed>(std::in_place, std::move(local), req);
  }

  // Parks the request by head (unique while the device owns it), then hands
  // it to the backend; the completion finds it by cookie. req.iov points
  // into iov_, filled by the parse() just before.
  void process(BlkRequest request, const block::Request& req) {
    std::optional<BlkRequest>& slot = slots_[req.cookie];
    slot.emplace(std::move(request));
    if (auto r = ctx_->submit(req); !r) {
      finish(*slot, r);
      slot.reset();
      return;
    }
    ++pending_;
  }

  VirtioBlk::Shared& shared_;
  std::unique_ptr<block::IoContext> ctx_;
  std::vector<std::optional<BlkRequest>> slots_;  // by head; queue thread only
  uint32_t pending_ = 0;                          // submitted, not completed
  std::vector<block::Completion> completions_;
  std::vector<iovec> iov_;
};

VirtioBlk::VirtioBlk(std::unique_ptr<block::DiskFile> disk, VirtioBlkOptions options)
    : disk_(std::move(disk)), options_(std::move(options)) {
  block::Capabilities caps = disk_->capabilities();
  shared_.disk = disk_.get();
  shared_.read_only = options_.read_only || caps.read_only;
  shared_.serial = options_.serial;
  shared_.log_name = options_.id.empty() ? "virtio-blk" : "virtio-blk " + options_.id;
  shared_.capacity.store(disk_->size() / kSector);
  shared_.max_discard_sectors = kMaxDiscardSectors;
  shared_.max_write_zeroes_sectors = kMaxDiscardSectors;
  shared_.seg_max = blk_seg_max(options_.queue_size);
  features_ = kVirtioFVersion1 | kVirtioFRingIndirectDesc | kVirtioFRingEventIdx | kBlkFBlkSize |
              kBlkFSizeMax | kBlkFSegMax | kBlkFFlush | kBlkFMq;
  if (shared_.read_only) features_ |= kBlkFRo;
  if (caps.discard) features_ |= kBlkFDiscard;
  if (caps.write_zeroes) features_ |= kBlkFWriteZeroes;
  shared_.features = features_;
}

VirtioBlk::~VirtioBlk() {
  if (auto r = close(); !r) {
    std::fprintf(stderr, "tern: %s: closing the disk failed: %s\n", options_.id.c_str(),
                 r.error().message().c_str());
  }
}

block::Result<void> VirtioBlk::close() {
  reset();
  return disk_->close();
}

uint8_t VirtioBlk::config_generation() const {
  std::lock_guard lock(config_mutex_);
  return generation_;
}

void VirtioBlk::read_config(uint32_t offset, std::span<uint8_t> data) const {
  // struct virtio_blk_config (5.2.4), little-endian on x86.
  uint8_t cfg[kBlkConfigSize] = {};
  auto put = [&](size_t at, auto value) { std::memcpy(cfg + at, &value, sizeof value); };
  block::Topology topo = disk_->topology();
  {
    // Not between a resize's capacity and its generation (resize()).
    std::lock_guard lock(config_mutex_);
    put(0, shared_.capacity.load(std::memory_order_acquire));
  }
  put(8, kBlkSizeMax);          // size_max
  put(12, shared_.seg_max);     // seg_max
  put(20, uint32_t{topo.logical_block_size});                          // blk_size
  put(34, uint16_t{options_.num_queues});
  put(36, shared_.max_discard_sectors);
  put(40, uint32_t{1});  // max_discard_seg
  put(44, uint32_t{std::max<uint32_t>(topo.discard_granularity / kSector, 1)});
  put(48, shared_.max_write_zeroes_sectors);
  put(52, uint32_t{1});  // max_write_zeroes_seg
  put(56, uint8_t{(features_ & kBlkFDiscard) ? uint8_t{1} : uint8_t{0}});  // write_zeroes_may_unmap
  for (size_t i = 0; i < data.size(); ++i) {
    uint64_t at = uint64_t{offset} + i;
    data[i] = at < sizeof cfg ? cfg[at] : 0;
  }
}

void VirtioBlk::write_config(uint32_t, std::span<const uint8_t>) {
  // Every field we offer is read-only (no CONFIG_WCE).
}

std::unique_ptr<QueueRunner> VirtioBlk::start_queue(const GuestMemory& memory, uint64_t features,
                                                    const ActiveQueue& queue, VirtioInterrupt& interrupt) {
  auto make_queue = [this](uint16_t size) -> std::expected<std::unique_ptr<QueueHandler>, std::string> {
    auto ctx = disk_->make_io_context(size);
    if (!ctx) return std::unexpected("cannot create I/O context: " + ctx.error().message());
    return std::make_unique<BlkQueue>(shared_, std::move(*ctx), size);
  };
  return QueueRunner::start(memory, features, queue, options_.queue_size, interrupt, make_queue);
}

void VirtioBlk::activate(const GuestMemory& memory, uint64_t features,
                         std::vector<ActiveQueue> queues, VirtioInterrupt& interrupt) {
  std::lock_guard lock(mutex_);
  runners_.clear();
  interrupt_ = &interrupt;
  for (const ActiveQueue& q : queues) {
    auto r = start_queue(memory, features, q, interrupt);
    if (!r) {
      runners_.clear();
      return;
    }
    runners_.push_back(std::move(r));
  }
}

void VirtioBlk::reset() {
  std::lock_guard lock(mutex_);
  runners_.clear();  // stops and joins every queue thread
  interrupt_ = nullptr;
}

void VirtioBlk::disable_queue(uint16_t index) {
  std::lock_guard lock(mutex_);
  // Stops and joins that queue's thread, which waits for its requests.
  std::erase_if(runners_, [&](const std::unique_ptr<QueueRunner>& r) { return r->index() == index; });
}

void VirtioBlk::enable_queue(const GuestMemory& memory, uint64_t features, const ActiveQueue& queue,
                             VirtioInterrupt& interrupt) {
  std::lock_guard lock(mutex_);
  if (!interrupt_) return;  // not active
  if (std::ranges::any_of(runners_, [&](const auto& r) { return r->index() == queue.index; })) return;
  if (auto r = start_queue(memory, features, queue, interrupt)) runners_.push_back(std::move(r));
}

block::Result<void> VirtioBlk::resize(uint64_t new_size) {
  if (auto r = disk_->resize(new_size); !r) return r;
  {
    // 4.1.4.3.1, 4.2.2.2: the driver re-reads the generation to
    // detect a change during its reads; the change must therefore be one
    // step with the new value, not a store followed later by the bump.
    std::lock_guard lock(config_mutex_);
    shared_.capacity.store(disk_->size() / kSector, std::memory_order_release);
    ++generation_;
  }
  std::lock_guard lock(mutex_);
  if (interrupt_) interrupt_->signal_config();
  return {};
}

BlkCounters VirtioBlk::counters() const { return snapshot(shared_.counters); }

}  // namespace tern::devices

#include "devices/virtio/blk/device.h"


#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <utility>

#include "block/disk.h"
#include "devices/virtio/blk/errors.h"
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
// through three steps (Firecracker's split): parse_blk_request() reads the
// chain into a block::Request (or the request is answered at once, by the
// device or with the rule it broke), process() hands it to the
// backend's IoContext, finish() turns the backend's verdict into the status
// byte when complete() drains it.
class BlkQueue final : public QueueHandler {
 public:
  BlkQueue(VirtioBlk::Shared& shared, std::unique_ptr<block::IoContext> ctx, uint16_t size)
      : shared_(shared), ctx_(std::move(ctx)), slots_(size) {}

  void handle(DescriptorChain chain) override {
    BlkParsed parsed = parse_blk_request(chain.buffers(), limits(), shared_.serial, chain.head(), iov_);
    if (auto* rejected = std::get_if<BlkRejection>(&parsed); rejected && *rejected == BlkRejection::no_status_byte) {
      // Nowhere to answer: the chain goes back untouched.
      blk_rejection_counter(shared_.counters, *rejected).fetch_add(1, std::memory_order_relaxed);
      request_log().log("virtio-blk", "request without a status byte");
      return;
    }
    std::span<uint8_t> status_byte = blk_status_byte(chain.buffers());
    BlkRequest request(std::move(chain), status_byte);
    if (auto* rejected = std::get_if<BlkRejection>(&parsed)) {
      reject(request, *rejected);
    } else if (auto* answer = std::get_if<BlkAnswer>(&parsed)) {
      if (answer->flush) shared_.counters.flush_ops.fetch_add(1, std::memory_order_relaxed);
      request.finish(kBlkSOk, answer->written);
    } else {
      auto& backend = std::get<BlkBackendRequest>(parsed);
      request.op = backend.request.op;
      request.offset = backend.request.offset;
      request.bytes = backend.bytes;
      request.read_len = backend.read_len;
      process(std::move(request), backend.request);
    }
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

  // The device refused the request: counted by its rule and by kind
  // (IOERR: invalid, UNSUPP: unsupported), and answered now.
  void reject(BlkRequest& r, BlkRejection why) {
    uint8_t status = blk_rejection_status(why);
    blk_rejection_counter(shared_.counters, why).fetch_add(1, std::memory_order_relaxed);
    count_blk_error(shared_.counters, status == kBlkSUnsupp ? BlkErrorKind::Unsupported : BlkErrorKind::Invalid);
    if (why == BlkRejection::beyond_seg_limits) request_log().log("virtio-blk", "request beyond seg_max or size_max");
    r.finish(status);
  }

  BlkParseLimits limits() const {
    BlkParseLimits l;
    l.capacity_sectors = shared_.capacity.load(std::memory_order_acquire);
    l.seg_max = shared_.seg_max;
    l.max_discard_sectors = shared_.max_discard_sectors;
    l.max_write_zeroes_sectors = shared_.max_write_zeroes_sectors;
    l.features = shared_.features;
    l.read_only = shared_.read_only;
    return l;
  }

  // Parks the request by head (unique while the device owns it), then hands
  // it to the backend; the completion finds it by cookie. req.iov points
  // into iov_, filled by parse_blk_request() just before.
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

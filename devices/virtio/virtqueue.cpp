#include "devices/virtio/virtqueue.h"

#include <atomic>
#include <bit>
#include <cstring>
#include <utility>

namespace tern::devices {

const char* queue_fault_name(QueueFault fault) {
  switch (fault) {
    case QueueFault::BadQueueSize: return "queue size is not a power of two within the maximum";
    case QueueFault::RingOutOfRange: return "a ring lies outside guest RAM";
    case QueueFault::RingMisaligned: return "a ring is misaligned";
    case QueueFault::AvailIdxJump: return "avail idx moved ahead by more than the queue size";
    case QueueFault::HeadOutOfRange: return "avail ring entry is not a descriptor index";
    case QueueFault::NextOutOfRange: return "descriptor next index is out of range";
    case QueueFault::ChainTooLong: return "descriptor chain loops or exceeds the table size";
    case QueueFault::BufferOutOfRange: return "descriptor buffer lies outside guest RAM";
    case QueueFault::IndirectNotNegotiated: return "indirect descriptor without RING_INDIRECT_DESC";
    case QueueFault::NestedIndirect: return "indirect descriptor inside an indirect table";
    case QueueFault::IndirectWithNext: return "indirect descriptor with NEXT set";
    case QueueFault::BadIndirectLength: return "indirect table length is not a non-zero multiple of 16 within the queue size";
    case QueueFault::IndirectOutOfRange: return "indirect table lies outside guest RAM";
    case QueueFault::ReadableAfterWritable: return "device-readable descriptor after a device-writable one";
    case QueueFault::HeadInUse: return "avail ring names a descriptor the device still owns";
  }
  return "unknown queue fault";
}

// ---- DescriptorChain ----

DescriptorChain::DescriptorChain(DescriptorChain&& other) noexcept
    : queue_(std::exchange(other.queue_, nullptr)),
      head_(other.head_),
      used_len_(other.used_len_),
      buffers_(std::move(other.buffers_)) {}

DescriptorChain& DescriptorChain::operator=(DescriptorChain&& other) noexcept {
  if (this != &other) {
    give_back();
    queue_ = std::exchange(other.queue_, nullptr);
    head_ = other.head_;
    used_len_ = other.used_len_;
    buffers_ = std::move(other.buffers_);
  }
  return *this;
}

DescriptorChain::~DescriptorChain() { give_back(); }

void DescriptorChain::give_back() {
  if (Virtqueue* q = std::exchange(queue_, nullptr)) q->put_used(head_, used_len_);
}

// ---- Virtqueue ----

namespace {

// 2.7.10: "vring_need_event": has new_idx passed event since old?
bool vring_need_event(uint16_t event, uint16_t new_idx, uint16_t old_idx) {
  return static_cast<uint16_t>(new_idx - event - 1) < static_cast<uint16_t>(new_idx - old_idx);
}

uint16_t* u16_at(std::span<uint8_t> ring, size_t offset) {
  // Alignment of the ring base was checked in create(); every field offset
  // used here is even.
  return reinterpret_cast<uint16_t*>(ring.data() + offset);
}

}  // namespace

std::expected<std::unique_ptr<Virtqueue>, QueueFault> Virtqueue::create(
    const GuestMemory& memory, const QueueConfig& config, QueueFeatures features,
    uint16_t max_size) {
  if (config.size == 0 || !std::has_single_bit(config.size) || config.size > max_size ||
      config.size > kMaxQueueSize) {
    return std::unexpected(QueueFault::BadQueueSize);
  }
  // 2.7: descriptor table 16-byte, available ring 2-byte, used ring 4-byte aligned.
  if (config.desc_addr % 16 != 0 || config.avail_addr % 2 != 0 || config.used_addr % 4 != 0) {
    return std::unexpected(QueueFault::RingMisaligned);
  }
  auto q = std::unique_ptr<Virtqueue>(new Virtqueue(memory, config, features));
  uint64_t n = config.size;
  auto desc = memory.span(config.desc_addr, 16 * n);
  auto avail = memory.span(config.avail_addr, 6 + 2 * n);  // flags idx ring[n] used_event
  auto used = memory.span(config.used_addr, 6 + 8 * n);    // flags idx ring[n] avail_event
  if (!desc || !avail || !used) return std::unexpected(QueueFault::RingOutOfRange);
  q->desc_ = *desc;
  q->avail_ = *avail;
  q->used_ = *used;
  return q;
}

Virtqueue::Virtqueue(const GuestMemory& memory, const QueueConfig& config, QueueFeatures features)
    : memory_(memory), features_(features), size_(config.size), head_in_use_(config.size, false) {}

std::unexpected<QueueFault> Virtqueue::breaks(QueueFault fault) {
  if (!broken_) broken_ = fault;
  return std::unexpected(fault);
}

uint16_t Virtqueue::load_avail_idx() const {
  // guest-controlled: avail->idx. Acquire pairs with the driver's write
  // barrier before it publishes idx (2.7.13), so the ring entries we read
  // next are the ones it wrote.
  // seq_cst (acquire and more) so it is ordered after arm_notification()'s
  // avail_event store.
  return std::atomic_ref<uint16_t>(*u16_at(avail_, 2)).load(std::memory_order_seq_cst);
}

std::expected<std::optional<DescriptorChain>, QueueFault> Virtqueue::pop() {
  if (broken_) return std::unexpected(*broken_);
  uint16_t avail_idx = load_avail_idx();
  if (avail_idx == last_avail_) return std::optional<DescriptorChain>();
  if (static_cast<uint16_t>(avail_idx - last_avail_) > size_) {
    return breaks(QueueFault::AvailIdxJump);
  }
  uint16_t head;  // guest-controlled: avail->ring[last_avail % size]
  std::memcpy(&head, avail_.data() + 4 + 2 * (last_avail_ % size_), sizeof head);
  if (head >= size_) return breaks(QueueFault::HeadOutOfRange);
  if (head_in_use_[head]) return breaks(QueueFault::HeadInUse);
  auto buffers = walk(head);
  if (!buffers) return breaks(buffers.error());
  ++last_avail_;
  ++in_flight_;
  head_in_use_[head] = true;
  return std::optional<DescriptorChain>(DescriptorChain(this, head, std::move(*buffers)));
}

std::expected<void, QueueFault> Virtqueue::add_buffer(const Desc& d, std::vector<ChainBuffer>& out,
                                                      bool& seen_writable) {
  bool writable = (d.flags & kVirtqDescFWrite) != 0;
  // 2.7.4.2: the driver places device-writable descriptors after the
  // device-readable ones.
  if (!writable && seen_writable) return std::unexpected(QueueFault::ReadableAfterWritable);
  seen_writable = seen_writable || writable;
  auto bytes = memory_.span(d.addr, d.len);
  if (!bytes) return std::unexpected(QueueFault::BufferOutOfRange);
  out.push_back(ChainBuffer{*bytes, writable});
  return {};
}

std::expected<std::vector<ChainBuffer>, QueueFault> Virtqueue::walk(uint16_t head) {
  std::vector<ChainBuffer> out;
  bool seen_writable = false;
  uint16_t index = head;
  // A chain visits at most size_ descriptors; one more means a loop (or a
  // chain longer than the queue, which 2.7.5.3.1 forbids too: "A driver
  // MUST NOT create a descriptor chain longer than the Queue Size of the
  // device"). Buffers from an indirect table count towards the same bound.
  for (uint32_t count = 1;; ++count) {
    if (count > size_) return std::unexpected(QueueFault::ChainTooLong);
    Desc d;  // guest-controlled: read once, then validated
    std::memcpy(&d, desc_.data() + 16 * static_cast<size_t>(index), sizeof d);
    if (d.flags & kVirtqDescFIndirect) {
      // 2.7.5.3: an indirect descriptor ends the direct chain; its table
      // holds the rest.
      if (!features_.indirect) return std::unexpected(QueueFault::IndirectNotNegotiated);
      if (d.flags & kVirtqDescFNext) return std::unexpected(QueueFault::IndirectWithNext);
      // A table of more entries than the queue size can only hold a chain
      // longer than the queue (2.7.5.3.1); refused before it is walked.
      if (d.len == 0 || d.len % 16 != 0 || d.len / 16 > size_) {
        return std::unexpected(QueueFault::BadIndirectLength);
      }
      auto table = memory_.span(d.addr, d.len);
      if (!table) return std::unexpected(QueueFault::IndirectOutOfRange);
      uint32_t entries = d.len / 16;
      uint32_t i = 0;
      for (uint32_t seen = 1;; ++seen) {
        if (seen > entries || out.size() >= size_) return std::unexpected(QueueFault::ChainTooLong);
        Desc e;  // guest-controlled
        std::memcpy(&e, table->data() + 16 * static_cast<size_t>(i), sizeof e);
        // 2.7.5.3.1: "The driver MUST NOT set the VIRTQ_DESC_F_INDIRECT flag
        // within an indirect descriptor".
        if (e.flags & kVirtqDescFIndirect) return std::unexpected(QueueFault::NestedIndirect);
        if (auto r = add_buffer(e, out, seen_writable); !r) return std::unexpected(r.error());
        if (!(e.flags & kVirtqDescFNext)) return out;
        if (e.next >= entries) return std::unexpected(QueueFault::NextOutOfRange);
        i = e.next;
      }
    }
    if (auto r = add_buffer(d, out, seen_writable); !r) return std::unexpected(r.error());
    if (!(d.flags & kVirtqDescFNext)) return out;
    if (d.next >= size_) return std::unexpected(QueueFault::NextOutOfRange);
    index = d.next;
  }
}

void Virtqueue::put_used(uint16_t head, uint32_t len) {
  --in_flight_;
  head_in_use_[head] = false;
  if (detached_) return;
  size_t slot = used_idx_ % size_;
  uint32_t elem[2] = {head, len};  // struct virtq_used_elem { le32 id; le32 len; }
  std::memcpy(used_.data() + 4 + 8 * slot, elem, sizeof elem);
  ++used_idx_;
  // At least release: the element (and the data written into the buffers)
  // is visible before the driver can see the new idx. seq_cst also orders
  // this store before needs_interrupt()'s read of used_event (store-load,
  // 2.7.10), which a release store alone would not.
  std::atomic_ref<uint16_t>(*u16_at(used_, 2)).store(used_idx_, std::memory_order_seq_cst);
}

bool Virtqueue::arm_notification() {
  if (broken_ || detached_) return false;
  if (features_.event_idx) {
    // avail_event lives after the used ring (2.7.8).
    // Store avail_event, then load avail idx, both seq_cst: a driver that
    // published just before our store is seen here, or it sees our
    // avail_event and notifies us.
    std::atomic_ref<uint16_t>(*u16_at(used_, 4 + 8 * static_cast<size_t>(size_)))
        .store(last_avail_, std::memory_order_seq_cst);
  }
  return load_avail_idx() != last_avail_;
}

bool Virtqueue::needs_interrupt() {
  if (detached_ || used_idx_ == signalled_used_) return false;
  uint16_t old = std::exchange(signalled_used_, used_idx_);
  // seq_cst loads: ordered after put_used()'s seq_cst used idx store, so we
  // never read a suppression state older than what we published.
  if (features_.event_idx) {
    // guest-controlled: used_event, after the avail ring (2.7.7).
    uint16_t used_event = std::atomic_ref<uint16_t>(*u16_at(avail_, 4 + 2 * static_cast<size_t>(size_)))
                              .load(std::memory_order_seq_cst);
    return vring_need_event(used_event, used_idx_, old);
  }
  uint16_t flags = std::atomic_ref<uint16_t>(*u16_at(avail_, 0)).load(std::memory_order_seq_cst);
  return (flags & kVirtqAvailFNoInterrupt) == 0;  // guest-controlled
}

}  // namespace tern::devices

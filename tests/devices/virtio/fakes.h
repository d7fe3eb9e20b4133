// Test doubles for the virtio tests: guest RAM in a vector, a driver that
// builds descriptor chains the way a guest would, an in-memory disk whose
// completions the test can hold back and release in any order, and fake
// VmServices / VirtioInterrupt that record what the device asked for.
#pragma once

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "base/event_fd.h"
#include "block/disk.h"
#include "devices/guest_memory.h"
#include "devices/virtio/virtio_device.h"
#include "devices/vm_services.h"

namespace tern::devices::testing {

// Waits (bounded, not a timing assertion) until pred() holds.
inline bool wait_for(const std::function<bool()>& pred) {
  for (int i = 0; i < 5000; ++i) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return pred();
}

class TestRam {
 public:
  explicit TestRam(uint64_t size) : bytes_(size) {
    memory_ = GuestMemory({GuestMemory::Region{0, size, bytes_.data()}});
  }
  const GuestMemory& memory() const { return memory_; }
  uint8_t* at(uint64_t gpa) { return bytes_.data() + gpa; }
  template <class T>
  void put(uint64_t gpa, T v) {
    std::memcpy(at(gpa), &v, sizeof v);
  }
  template <class T>
  T get(uint64_t gpa) {
    T v;
    std::memcpy(&v, at(gpa), sizeof v);
    return v;
  }
  uint64_t size() const { return bytes_.size(); }

 private:
  std::vector<uint8_t> bytes_;
  GuestMemory memory_;
};

// Plays the guest driver's side of one split virtqueue.
class DriverQueue {
 public:
  struct Buf {
    uint64_t addr;
    uint32_t len;
    bool write;
  };

  DriverQueue(TestRam& ram, uint16_t size, uint64_t base) : ram_(&ram), size_(size) {
    desc_ = base;
    avail_ = base + 16u * size;
    used_ = (avail_ + 6 + 2u * size + 3) & ~uint64_t{3};
  }
  QueueConfig config() const { return QueueConfig{size_, desc_, avail_, used_}; }
  uint64_t desc_addr() const { return desc_; }

  void write_desc(uint16_t i, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next) {
    uint64_t d = desc_ + 16u * i;
    ram_->put<uint64_t>(d, addr);
    ram_->put<uint32_t>(d + 8, len);
    ram_->put<uint16_t>(d + 12, flags);
    ram_->put<uint16_t>(d + 14, next);
  }
  static void write_desc_at(TestRam& ram, uint64_t d, uint64_t addr, uint32_t len, uint16_t flags,
                            uint16_t next) {
    ram.put<uint64_t>(d, addr);
    ram.put<uint32_t>(d + 8, len);
    ram.put<uint16_t>(d + 12, flags);
    ram.put<uint16_t>(d + 14, next);
  }

  // Writes a direct chain into free descriptors and publishes it.
  uint16_t add_chain(const std::vector<Buf>& bufs) {
    uint16_t head = next_free_;
    for (size_t i = 0; i < bufs.size(); ++i) {
      uint16_t idx = static_cast<uint16_t>((head + i) % size_);
      uint16_t flags = bufs[i].write ? kVirtqDescFWrite : 0;
      if (i + 1 < bufs.size()) flags |= kVirtqDescFNext;
      write_desc(idx, bufs[i].addr, bufs[i].len, flags, static_cast<uint16_t>((idx + 1) % size_));
    }
    next_free_ = static_cast<uint16_t>((head + bufs.size()) % size_);
    publish(head);
    return head;
  }

  // Writes `bufs` as an indirect table at `table` and publishes one
  // descriptor pointing at it.
  uint16_t add_indirect(const std::vector<Buf>& bufs, uint64_t table) {
    for (size_t i = 0; i < bufs.size(); ++i) {
      uint16_t flags = bufs[i].write ? kVirtqDescFWrite : 0;
      if (i + 1 < bufs.size()) flags |= kVirtqDescFNext;
      write_desc_at(*ram_, table + 16 * i, bufs[i].addr, bufs[i].len, flags,
                    static_cast<uint16_t>(i + 1));
    }
    uint16_t head = next_free_;
    next_free_ = static_cast<uint16_t>((head + 1) % size_);
    write_desc(head, table, static_cast<uint32_t>(16 * bufs.size()), kVirtqDescFIndirect, 0);
    publish(head);
    return head;
  }

  // Like a driver: ring entry, then a release store of idx (2.7.13), so
  // everything written before is visible to the device that acquires it.
  void publish(uint16_t head) {
    uint16_t idx = ring_field(avail_ + 2).load(std::memory_order_relaxed);
    ram_->put<uint16_t>(avail_ + 4 + 2u * (idx % size_), head);
    ring_field(avail_ + 2).store(static_cast<uint16_t>(idx + 1), std::memory_order_seq_cst);
  }
  void set_avail_idx(uint16_t v) { ring_field(avail_ + 2).store(v, std::memory_order_seq_cst); }
  void set_avail_flags(uint16_t v) { ring_field(avail_).store(v, std::memory_order_seq_cst); }
  void set_used_event(uint16_t v) { ring_field(avail_ + 4 + 2u * size_).store(v, std::memory_order_seq_cst); }
  uint16_t avail_event() { return ring_field(used_ + 4 + 8u * size_).load(std::memory_order_seq_cst); }
  std::atomic_ref<uint16_t> ring_field(uint64_t gpa) {
    return std::atomic_ref<uint16_t>(*reinterpret_cast<uint16_t*>(ram_->at(gpa)));
  }
  // Acquire pairs with the device's release store: what the device wrote
  // before publishing (status bytes, data) is visible afterwards.
  uint16_t used_idx() {
    return std::atomic_ref<uint16_t>(*reinterpret_cast<uint16_t*>(ram_->at(used_ + 2)))
        .load(std::memory_order_acquire);
  }
  std::pair<uint32_t, uint32_t> used_elem(uint16_t i) {
    uint64_t e = used_ + 4 + 8u * (i % size_);
    return {ram_->get<uint32_t>(e), ram_->get<uint32_t>(e + 4)};
  }

 private:
  TestRam* ram_;
  uint16_t size_;
  uint64_t desc_ = 0, avail_ = 0, used_ = 0;
  uint16_t next_free_ = 0;
};

// ---- in-memory disk ----

class MemDisk;

class MemIoContext final : public block::IoContext {
 public:
  explicit MemIoContext(MemDisk& disk, uint32_t depth)
      : disk_(disk), depth_(depth), efd_(*EventFd::create()) {}
  int completion_fd() const override { return efd_.fd(); }
  block::Result<void> submit(const block::Request& r) override;
  void drain(std::vector<block::Completion>& out) override {
    std::lock_guard lock(mutex_);
    efd_.consume();
    for (auto& c : done_) out.push_back(std::move(c));
    done_.clear();
  }
  uint32_t depth() const override { return depth_; }
  // Completes every held request, last submitted first.
  void release_reverse();
  size_t held() {
    std::lock_guard lock(mutex_);
    return held_.size();
  }

 private:
  struct Held {
    block::Request req;
    std::vector<iovec> iov;
  };
  block::Completion execute(const block::Request& r);

  MemDisk& disk_;
  uint32_t depth_;
  EventFd efd_;
  std::mutex mutex_;
  std::vector<Held> held_;                 // guarded by mutex_
  std::vector<block::Completion> done_;   // guarded by mutex_
};

class MemDisk final : public block::DiskFile {
 public:
  explicit MemDisk(uint64_t size, block::Capabilities caps = {.read_only = false, .discard = true,
                                                               .write_zeroes = true})
      : data_(size), caps_(caps) {}
  std::string_view format_name() const override { return "mem"; }
  void image_fds(std::vector<int>&) const override {}  // no file
  uint64_t size() const override {
    std::lock_guard lock(mutex_);
    return data_.size();
  }
  block::Result<void> resize(uint64_t new_size) override {
    std::lock_guard lock(mutex_);
    if (new_size < data_.size()) return block::fail(block::Errc::ShrinkRefused);
    data_.resize(new_size);
    return {};
  }
  block::Topology topology() const override { return {}; }
  block::Capabilities capabilities() const override { return caps_; }
  block::Result<std::unique_ptr<block::IoContext>> make_io_context(uint32_t depth) override {
    auto ctx = std::make_unique<MemIoContext>(*this, depth);
    std::lock_guard lock(mutex_);
    contexts_.push_back(ctx.get());
    return ctx;
  }
  block::Result<void> close() override { return {}; }
  uint64_t allocated_bytes() const override { return data_.size(); }

  std::vector<uint8_t>& bytes() { return data_; }  // test thread, while idle
  std::atomic<bool> hold{false};        // keep completions until released
  std::atomic<bool> fail_next{false};   // next request completes with an error
  MemIoContext* context(size_t i) {
    std::lock_guard lock(mutex_);
    return i < contexts_.size() ? contexts_[i] : nullptr;
  }

 private:
  friend class MemIoContext;
  mutable std::mutex mutex_;
  std::vector<uint8_t> data_;  // guarded by mutex_
  block::Capabilities caps_;
  std::vector<MemIoContext*> contexts_;  // guarded by mutex_
};

inline block::Completion MemIoContext::execute(const block::Request& r) {
  std::lock_guard lock(disk_.mutex_);
  if (disk_.fail_next.exchange(false)) {
    return {r.cookie, block::fail(block::Errc::WriteFailed, 5)};
  }
  auto& d = disk_.data_;
  uint64_t len = r.length;
  if (r.op == block::Op::Read || r.op == block::Op::Write) {
    len = 0;
    for (const iovec& v : r.iov) len += v.iov_len;
  }
  if (r.op != block::Op::Flush && (r.offset > d.size() || len > d.size() - r.offset)) {
    return {r.cookie, block::fail(block::Errc::OutOfRange)};
  }
  uint64_t off = r.offset;
  switch (r.op) {
    case block::Op::Read:
      for (const iovec& v : r.iov) {
        std::memcpy(v.iov_base, d.data() + off, v.iov_len);
        off += v.iov_len;
      }
      break;
    case block::Op::Write:
      for (const iovec& v : r.iov) {
        std::memcpy(d.data() + off, v.iov_base, v.iov_len);
        off += v.iov_len;
      }
      break;
    case block::Op::Flush:
      break;
    case block::Op::Discard:
    case block::Op::WriteZeroes:
      std::memset(d.data() + off, 0, len);
      break;
  }
  return {r.cookie, {}};
}

inline block::Result<void> MemIoContext::submit(const block::Request& r) {
  if (disk_.hold.load()) {
    std::lock_guard lock(mutex_);
    Held h{r, std::vector<iovec>(r.iov.begin(), r.iov.end())};
    held_.push_back(std::move(h));
    held_.back().req.iov = held_.back().iov;
    return {};
  }
  block::Completion c = execute(r);
  std::lock_guard lock(mutex_);
  done_.push_back(std::move(c));
  efd_.signal();
  return {};
}

inline void MemIoContext::release_reverse() {
  std::lock_guard lock(mutex_);
  for (auto it = held_.rbegin(); it != held_.rend(); ++it) {
    it->req.iov = it->iov;
    done_.push_back(execute(it->req));
  }
  held_.clear();
  efd_.signal();
}

// ---- interrupts and VM services ----

class FakeInterrupt final : public VirtioInterrupt {
 public:
  void signal_queue(uint16_t) override { queue_signals.fetch_add(1); }
  void signal_config() override { config_signals.fetch_add(1); }
  void needs_reset(std::string_view reason) override {
    std::lock_guard lock(mutex);
    reasons.emplace_back(reason);
    resets.fetch_add(1);
  }
  std::atomic<int> queue_signals{0}, config_signals{0}, resets{0};
  std::mutex mutex;
  std::vector<std::string> reasons;  // guarded by mutex
};

class FakeMsiIrq final : public MsiIrq {
 public:
  SysResult<void> set_message(std::optional<MsiMessage> m) override {
    std::lock_guard lock(mutex);
    message = m;
    return {};
  }
  void trigger() override { triggers.fetch_add(1); }
  int eventfd() const override { return -1; }
  std::atomic<int> triggers{0};
  std::mutex mutex;
  std::optional<MsiMessage> message;  // guarded by mutex
};

class FakeIrqLine final : public IrqLine {
 public:
  explicit FakeIrqLine(uint32_t g) : gsi(g) {}
  void trigger() override { triggers.fetch_add(1); }
  const uint32_t gsi;
  std::atomic<int> triggers{0};
};

class FakeVmServices final : public VmServices {
 public:
  struct IoEventFd {
    uint64_t addr;
    uint32_t len;
    int fd;
  };
  SysResult<void> add_ioeventfd(AddressSpace, uint64_t addr, uint32_t len, int fd,
                                std::optional<uint64_t>) override {
    std::lock_guard lock(mutex);
    ioeventfds.push_back({addr, len, fd});
    return {};
  }
  SysResult<void> remove_ioeventfd(AddressSpace, uint64_t addr, uint32_t, int fd,
                                   std::optional<uint64_t>) override {
    std::lock_guard lock(mutex);
    std::erase_if(ioeventfds, [&](const IoEventFd& e) { return e.addr == addr && e.fd == fd; });
    return {};
  }
  SysResult<std::unique_ptr<MsiIrq>> create_msi_irq() override {
    auto irq = std::make_unique<FakeMsiIrq>();
    std::lock_guard lock(mutex);
    irqs.push_back(irq.get());
    return irq;
  }
  void set_irq_line(uint32_t, bool) override {}
  SysResult<std::unique_ptr<IrqLine>> create_irq_line(uint32_t gsi) override {
    auto line = std::make_unique<FakeIrqLine>(gsi);
    std::lock_guard lock(mutex);
    lines.push_back(line.get());
    return line;
  }

  std::mutex mutex;
  std::vector<FakeIrqLine*> lines;    // guarded by mutex
  std::vector<IoEventFd> ioeventfds;  // guarded by mutex
  std::vector<FakeMsiIrq*> irqs;      // guarded by mutex
};

}  // namespace tern::devices::testing

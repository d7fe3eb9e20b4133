// The virtio-blk request-path fuzz body, shared by the libFuzzer target
// (tests/fuzz/virtio_blk_fuzz.cpp) and the regression test that replays its
// corpus (tests/fuzz/virtio_blk_regressions/) in every build.
//
// The input plays a hostile guest driver: it lays out one split virtqueue
// (descriptor table, avail and used rings) in fake guest RAM, builds batches
// of descriptor chains (direct or indirect, header split across
// descriptors, many or huge segments, segments past seg_max and size_max,
// discard and write-zeroes segments, a few descriptors with arbitrary
// flags, next, address and length) and drives a VirtioBlk over a real
// backend in a temp directory: raw (sync, Linux AIO, thread pool) or a fresh
// QCOW2 image (buffered or O_DIRECT), growing the disk between batches.
//
// Determinism: before the device sees a batch, a shadow Virtqueue over the
// same memory pops it, so the harness knows how many chains the device will
// take (and whether the queue breaks) and waits for exactly those answers;
// writable buffers never overlap the rings, so what the device writes cannot
// change what it reads next. With the backends that run requests in
// submission order (raw sync, buffered QCOW2) a mirror of the disk and of
// guest RAM predicts every byte a successful request moves, and the disk
// is compared at the end. A QCOW2 image must pass check() afterwards
// whatever the guest did. Findings: crashes, sanitizer reports, a request
// never answered, a mirror mismatch, metadata corruption, or an fd or
// thread left behind by an iteration (all abort()).
#pragma once

#include <dirent.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "base/event_fd.h"
#include "base/unique_fd.h"
#include "block/open.h"
#include "block/qcow2/create.h"
#include "block/qcow2/engine.h"
#include "block/qcow2/host_file.h"
#include "devices/guest_memory.h"
#include "devices/virtio/blk/device.h"
#include "devices/virtio/virtqueue.h"

namespace tern::devices::fuzz {

// Reads the input front to back; zeros once it runs out.
class Input {
 public:
  Input(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  bool empty() const { return pos_ >= size_; }
  uint8_t u8() { return pos_ < size_ ? data_[pos_++] : 0; }
  uint16_t u16() { return static_cast<uint16_t>(u8() | (u8() << 8)); }
  uint32_t u32() { return u16() | (uint32_t{u16()} << 16); }
  uint64_t u64() { return u32() | (uint64_t{u32()} << 32); }
  template <class T>
  T pick(std::initializer_list<T> list) {
    return list.begin()[u8() % list.size()];
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

[[noreturn]] inline void finding(const char* what, uint64_t a = 0, uint64_t b = 0) {
  std::fprintf(stderr, "virtio-blk fuzz finding: %s (%llu, %llu)\n", what,
               static_cast<unsigned long long>(a), static_cast<unsigned long long>(b));
  std::abort();
}

// TERN_FUZZ_TRACE=1: print what the mirror replays (to debug a finding).
inline bool trace() {
  static bool on = std::getenv("TERN_FUZZ_TRACE") != nullptr;
  return on;
}

class CountingInterrupt final : public VirtioInterrupt {
 public:
  void signal_queue(uint16_t) override {}
  void signal_config() override {}
  void needs_reset(std::string_view) override { resets.fetch_add(1); }
  std::atomic<int> resets{0};
};

// Guest RAM layout. Device-writable buffers the harness builds lie in the
// status and data areas only (or outside RAM), never over rings, indirect
// tables or headers.
inline constexpr uint64_t kRam = 8 << 20;
inline constexpr uint64_t kDesc = 0x1000;       // 16 * 256
inline constexpr uint64_t kAvail = 0x2000;      // 6 + 2 * 256
inline constexpr uint64_t kUsed = 0x3000;       // 6 + 8 * 256
inline constexpr uint64_t kIndirect = 0x10000;  // 4 KiB table per chain
inline constexpr uint64_t kHeaders = 0x110000;  // 64 bytes per chain
inline constexpr uint64_t kStatus = 0x118000;   // 1 byte per chain
inline constexpr uint64_t kData = 0x200000;     // to kRam
inline constexpr uint64_t kDataBytes = kRam - kData;
inline constexpr uint64_t kMirrorMax = 64 << 20;     // mirrored disks up to this
inline constexpr uint64_t kByteBudget = 48ull << 20;  // data bytes per input
inline constexpr uint64_t kSector = 512;

// What the harness knows of one chain it built, for the mirror.
struct ChainModel {
  bool modeled = false;  // built by the rules, effects predictable
  uint32_t type = 0;
  uint64_t sector = 0;
  std::vector<std::pair<uint64_t, uint64_t>> out;  // device-readable data after the header
  std::vector<std::pair<uint64_t, uint64_t>> in;   // device-writable before the status byte
  uint64_t status_gpa = 0;
  uint64_t seg_sector = 0;  // discard / write-zeroes
  uint32_t seg_num = 0;
};

class Harness {
 public:
  explicit Harness(const std::string& dir) : dir_(dir) {}

  void run(Input& in) {
    choose_backend(in);
    if (!open_disk()) return;
    qsize_ = in.pick<uint16_t>({4, 8, 16, 32, 64, 128, 256});
    uint16_t dev_max = static_cast<uint16_t>(qsize_ << (in.u8() % 3));
    VirtioBlkOptions opts{.read_only = (in.u8() % 16) == 0, .num_queues = 1, .queue_size = dev_max,
                          .serial = "fuzz-serial-0123456789", .id = "fuzz"};
    read_only_ = opts.read_only;
    blk_ = std::make_unique<VirtioBlk>(std::move(disk_), opts);
    uint8_t f = in.u8();
    features_ = kVirtioFVersion1 | ((f & 1) ? kVirtioFRingIndirectDesc : 0) |
                ((f & 2) ? kVirtioFRingEventIdx : 0);
    features_ |= blk_->device_features() & ~(kVirtioFRingIndirectDesc | kVirtioFRingEventIdx);
    activate();
    if (trace()) {
      std::fprintf(stderr, "backend %d size %llu cluster %u queue %u/%u features %#llx ro %d\n",
                   static_cast<int>(backend_), (unsigned long long)size_, cluster_, qsize_, dev_max,
                   (unsigned long long)features_, read_only_);
    }
    for (int batch = 0; batch < 8 && !in.empty(); ++batch) {
      if (in.u8() % 4 == 0) resize(in);
      run_batch(in);
    }
    finish();
  }

 private:
  enum class Backend { RawSync, RawNative, RawThreads, RawDirect, Qcow2, Qcow2Direct };

  void choose_backend(Input& in) {
    backend_ = in.pick({Backend::RawSync, Backend::RawSync, Backend::Qcow2, Backend::Qcow2,
                        Backend::RawNative, Backend::RawThreads, Backend::RawDirect,
                        Backend::Qcow2Direct});
    size_ = in.pick<uint64_t>({7 * kSector, 64 << 10, 1 << 20, 8 << 20, 3ull << 30});
    cluster_ = in.pick<uint32_t>({512, 4096, 65536});
    mirror_ = (backend_ == Backend::RawSync || backend_ == Backend::Qcow2) && size_ <= kMirrorMax;
    path_ = dir_ + (qcow2() ? "/disk.qcow2" : "/disk.raw");
  }
  bool qcow2() const { return backend_ == Backend::Qcow2 || backend_ == Backend::Qcow2Direct; }

  // A fresh image per input: raw is a sparse file; QCOW2 a copy of a
  // template made once per (size, cluster size).
  bool open_disk() {
    ::unlink(path_.c_str());
    if (qcow2()) {
      auto key = std::make_pair(size_, cluster_);
      auto it = templates_.find(key);
      if (it == templates_.end()) {
        std::string t = dir_ + "/template.qcow2";
        ::unlink(t.c_str());
        block::qcow2::CreateOptions c;
        c.path = t;
        c.size = size_;
        c.cluster_size = cluster_;
        if (!block::qcow2::create_image(c)) finding("cannot create a template image");
        std::ifstream f(t, std::ios::binary);
        std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(f)), {});
        ::unlink(t.c_str());
        it = templates_.emplace(key, std::move(bytes)).first;
      }
      UniqueFd fd(::open(path_.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
      if (!fd || ::write(fd.get(), it->second.data(), it->second.size()) !=
                     static_cast<ssize_t>(it->second.size())) {
        finding("cannot write the image");
      }
    } else {
      UniqueFd fd(::open(path_.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
      if (!fd || ::ftruncate(fd.get(), static_cast<off_t>(size_)) != 0) finding("cannot create raw");
    }
    block::OpenOptions o;
    o.path = path_;
    o.type = qcow2() ? block::ImageType::Qcow2 : block::ImageType::Raw;
    o.direct = backend_ == Backend::Qcow2Direct || backend_ == Backend::RawDirect;
    o.lock = false;
    o.aio = backend_ == Backend::RawNative || backend_ == Backend::RawDirect ? block::AioMode::Native
            : backend_ == Backend::RawThreads ? block::AioMode::Threads
                                              : block::AioMode::Sync;
    auto d = block::open_disk(o);
    if (!d) finding("cannot open a fresh image", static_cast<uint64_t>(d.error().code));
    disk_ = std::move(*d);
    std::memset(ram_.data() + kData, 0, kDataBytes);
    if (mirror_) {
      disk_bytes_.assign(size_, 0);
      disk_known_.assign(size_ / kSector + 1, 1);
      // Guest RAM's data area starts unknown; what the guest writes into
      // it (fill()) or reads from the disk becomes known.
      ram_known_.assign(kDataBytes, 0);
      model_ram_.resize(kDataBytes);
    }
    return true;
  }

  void activate() {
    std::memset(ram_.data(), 0, kData);
    avail_idx_ = 0;
    used_seen_ = 0;
    QueueConfig cfg{qsize_, kDesc, kAvail, kUsed};
    GuestMemory mem({GuestMemory::Region{0, kRam, ram_.data()}});
    memory_ = mem;
    QueueFeatures qf{.event_idx = (features_ & kVirtioFRingEventIdx) != 0,
                     .indirect = (features_ & kVirtioFRingIndirectDesc) != 0};
    auto shadow = Virtqueue::create(memory_, cfg, qf, qsize_);
    if (!shadow) finding("shadow queue refused the harness layout");
    shadow_ = std::move(*shadow);
    shadow_->detach();  // it never writes the used ring
    resets_before_ = irq_.resets.load();
    blk_->activate(memory_, features_, {ActiveQueue{0, cfg, notify_.fd()}}, irq_);
  }

  void resize(Input& in) {
    uint64_t old = blk_->capacity_sectors() * kSector;
    uint64_t grow = in.pick<uint64_t>({0, kSector, 65536, uint64_t{in.u16()} * kSector, 1ull << 30});
    bool shrink = in.u8() % 8 == 0;
    uint64_t want = shrink ? old / 2 : old + grow;
    auto r = blk_->resize(want);
    if (trace()) std::fprintf(stderr, "resize %llu -> %llu: %d\n", (unsigned long long)old, (unsigned long long)want, r.has_value());
    uint64_t now = blk_->capacity_sectors() * kSector;
    if (r && now < want / kSector * kSector) finding("resize reported success but capacity is short", now, want);
    if (!r && now != old) finding("failed resize changed the capacity", now, old);
    if (mirror_ && now > disk_bytes_.size()) {
      if (now > kMirrorMax) {
        mirror_ = false;
      } else {
        disk_bytes_.resize(now, 0);
        disk_known_.resize(now / kSector + 1, 1);
      }
    }
  }

  // A data segment: address in the data area, length by mode.
  std::pair<uint64_t, uint64_t> segment(Input& in) {
    uint64_t len;
    switch (in.u8() % 8) {
      case 0: len = kSector * (1 + in.u8() % 8); break;
      case 1: len = kSector * (1 + in.u16() % 2048); break;
      case 2: len = kBlkSizeMax; break;
      case 3: len = kBlkSizeMax + kSector; break;
      case 4: len = in.u16(); break;
      case 5: len = 0; break;
      case 6: len = 4096 * (1 + in.u8() % 16); break;
      default: len = kSector; break;
    }
    if (len > budget_) len = std::min<uint64_t>(budget_, kSector);
    budget_ -= len;
    uint64_t room = kDataBytes - len;
    uint64_t off = room ? in.u32() % room : 0;
    if (in.u8() % 4 != 0) off &= ~uint64_t{kSector - 1};
    return {kData + off, len};
  }

  struct Desc {
    uint64_t addr;
    uint32_t len;
    bool write;
  };

  // Builds chain number `n` into `descs`; fills the model.
  void build(Input& in, uint16_t n, std::vector<Desc>& descs, ChainModel& m) {
    uint8_t t = in.u8();
    uint32_t type = std::array<uint32_t, 8>{kBlkTIn, kBlkTOut, kBlkTIn, kBlkTOut, kBlkTFlush,
                                            kBlkTGetId, kBlkTDiscard, kBlkTWriteZeroes}[t % 8];
    if (t >= 0xf8) type = in.u32();
    uint64_t cap = blk_->capacity_sectors();
    uint64_t sector;
    switch (in.u8() % 4) {
      case 0: sector = in.u8(); break;
      case 1: sector = cap ? in.u32() % cap : 0; break;
      case 2: sector = cap - std::min<uint64_t>(cap, in.u8()); break;
      default: sector = in.u64(); break;
    }
    uint64_t hdr = kHeaders + 64u * n;
    ram_.put(hdr, type);
    ram_.put(hdr + 4, (in.u8() % 8 == 0) ? in.u32() : 0u);
    ram_.put(hdr + 8, sector);
    m.type = type;
    m.sector = sector;
    m.modeled = true;
    uint8_t frame = in.u8();
    if (frame % 4 == 0) {  // header over two descriptors (2.6.4)
      descs.push_back({hdr, 7, false});
      descs.push_back({hdr + 7, 9, false});
    } else {
      descs.push_back({hdr, 16, false});
    }
    uint32_t nseg;
    uint8_t s = in.u8();
    uint32_t seg_max = blk_seg_max(qsize_);
    if (s % 4 == 0) {
      nseg = seg_max + (s >> 2) % 4 - 1;  // around the limit
    } else {
      nseg = (s >> 2) % 5;
    }
    if (type == kBlkTDiscard || type == kBlkTWriteZeroes) {
      uint64_t seg = hdr + 16;
      uint64_t ssec;
      uint32_t num;
      switch (in.u8() % 4) {
        case 0: ssec = in.u8(); num = 1 + in.u8(); break;
        case 1: ssec = cap ? in.u32() % cap : 0; num = in.u16(); break;
        case 2: ssec = in.u64(); num = in.u32(); break;
        default: ssec = 0; num = static_cast<uint32_t>(std::min<uint64_t>(cap, 0x3fffff)); break;
      }
      uint32_t flags = in.u8() % 4 == 0 ? in.u32() : (in.u8() & 1);
      ram_.put(seg, ssec);
      ram_.put(seg + 8, num);
      ram_.put(seg + 12, flags);
      m.seg_sector = ssec;
      m.seg_num = num;
      uint8_t shape = in.u8() % 8;
      if (shape == 0) {
        descs.push_back({seg, 15, false});  // short segment
      } else if (shape == 1) {
        descs.push_back({seg, 32, false});  // two segments (max_discard_seg is 1)
      } else {
        descs.push_back({seg, 16, false});
      }
      nseg = 0;
    }
    bool data_writable = type == kBlkTIn || type == kBlkTGetId || (type != kBlkTOut && (in.u8() & 1));
    for (uint32_t i = 0; i < nseg && descs.size() + 2 <= 2u * qsize_; ++i) {
      auto [addr, len] = segment(in);
      if (!data_writable) fill(addr, len, in.u8());
      descs.push_back({addr, static_cast<uint32_t>(len), data_writable});
      (data_writable ? m.in : m.out).push_back({addr, len});
    }
    uint8_t st = in.u8() % 16;
    m.status_gpa = kStatus + n;
    ram_.put<uint8_t>(m.status_gpa, 0xee);
    if (st == 0) {
      m.modeled = false;  // no status descriptor: see apply()
    } else if (st == 1) {
      descs.push_back({m.status_gpa, 1, true});
      descs.push_back({m.status_gpa, 0, true});  // an empty writable descriptor last
    } else {
      descs.push_back({m.status_gpa, 1, true});
    }
  }

  // Guest writes data into RAM (and the model, which must agree).
  void fill(uint64_t addr, uint64_t len, uint8_t seed) {
    // A 4 KiB pattern per seed, repeated (byte loops are slow under coverage
    // instrumentation). 4 KiB + 1 apart so that sectors differ.
    uint8_t pattern[4096 + 1];
    for (size_t i = 0; i < sizeof pattern; ++i) pattern[i] = static_cast<uint8_t>(seed + i * 7 + (i >> 9));
    for (uint64_t done = 0; done < len;) {
      uint64_t n = std::min<uint64_t>(sizeof pattern, len - done);
      std::memcpy(ram_.data() + addr + done, pattern, n);
      if (mirror_) std::memcpy(model_ram_.data() + (addr - kData) + done, pattern, n);
      done += n;
      pattern[0] = static_cast<uint8_t>(pattern[0] + 1);
    }
    if (mirror_) std::memset(ram_known_.data() + (addr - kData), 1, len);
  }

  // Arbitrary flags, next, address, length for one descriptor; writable
  // ones still never land on the rings.
  void corrupt(Input& in, Desc& d, uint16_t& flags, uint16_t& next) {
    flags = in.u16() & 7;
    next = in.u8() % 2 ? in.u16() : static_cast<uint16_t>(in.u8() % qsize_);
    switch (in.u8() % 4) {
      case 0: d.addr = in.u64(); break;
      case 1: d.addr = kRam - (in.u8() % 64); break;
      case 2: d.addr = in.u32() % kRam; break;
      default: break;
    }
    d.len = in.u8() % 2 ? in.u32() : d.len;
    bool writes = (flags & kVirtqDescFWrite) || ((flags & kVirtqDescFIndirect) && (d.addr < kData));
    if (writes && d.addr < kRam && (d.addr < kData || d.addr + d.len > kRam)) {
      d.addr = kData + (d.addr % kDataBytes);
      d.len = static_cast<uint32_t>(std::min<uint64_t>(d.len, kRam - d.addr));
    }
    if (flags & kVirtqDescFIndirect) {
      // An indirect table the device only reads; keep it off the data area
      // so its contents do not change under the shadow.
      d.addr = kIndirect + d.addr % 0x100000;
      d.len = d.len % 8192;
    }
    mirror_ = false;  // effects of such a chain are not modelled
  }

  void write_desc(uint64_t gpa, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next) {
    ram_.put(gpa, addr);
    ram_.put(gpa + 8, len);
    ram_.put(gpa + 12, flags);
    ram_.put(gpa + 14, next);
  }

  void run_batch(Input& in) {
    uint16_t count = static_cast<uint16_t>(1 + in.u8() % qsize_);
    std::vector<ChainModel> models;
    std::vector<uint16_t> heads;
    uint16_t free_desc = 0;  // every descriptor is free at a batch's start
    for (uint16_t c = 0; c < count && !in.empty(); ++c) {
      std::vector<Desc> descs;
      ChainModel m;
      build(in, c, descs, m);
      bool indirect = (features_ & kVirtioFRingIndirectDesc) && (in.u8() % 3 == 0);
      int bad = in.u8() % 32 == 0 ? static_cast<int>(in.u8() % descs.size()) : -1;
      if (indirect) {
        if (free_desc >= qsize_) break;
        uint64_t table = kIndirect + 4096u * c;
        size_t entries = std::min<size_t>(descs.size(), 256);
        for (size_t i = 0; i < entries; ++i) {
          uint16_t flags = (descs[i].write ? kVirtqDescFWrite : 0) | (i + 1 < entries ? kVirtqDescFNext : 0);
          uint16_t next = static_cast<uint16_t>(i + 1);
          if (static_cast<int>(i) == bad) corrupt(in, descs[i], flags, next);
          write_desc(table + 16 * i, descs[i].addr, descs[i].len, flags, next);
        }
        uint16_t head = free_desc++;
        uint32_t len = static_cast<uint32_t>(16 * entries);
        if (in.u8() % 32 == 0) len = in.pick<uint32_t>({0, 8, len + 16, 16u * qsize_ + 16});
        write_desc(kDesc + 16u * head, table, len, kVirtqDescFIndirect, 0);
        heads.push_back(head);
      } else {
        if (free_desc + descs.size() > qsize_) break;
        uint16_t head = free_desc;
        for (size_t i = 0; i < descs.size(); ++i) {
          uint16_t idx = static_cast<uint16_t>(head + i);
          uint16_t flags = (descs[i].write ? kVirtqDescFWrite : 0) | (i + 1 < descs.size() ? kVirtqDescFNext : 0);
          uint16_t next = static_cast<uint16_t>(idx + 1);
          if (static_cast<int>(i) == bad) corrupt(in, descs[i], flags, next);
          write_desc(kDesc + 16u * idx, descs[i].addr, descs[i].len, flags, next);
        }
        free_desc = static_cast<uint16_t>(free_desc + descs.size());
        heads.push_back(head);
      }
      models.push_back(std::move(m));
    }
    if (heads.empty()) return;
    // Publish: ring entries, then idx (rarely a bad head or an idx jump).
    uint16_t first = avail_idx_;
    for (size_t i = 0; i < heads.size(); ++i) {
      uint16_t h = heads[i];
      if (in.u8() % 64 == 0) h = static_cast<uint16_t>(qsize_ + in.u8());
      ram_.put<uint16_t>(kAvail + 4 + 2u * ((first + i) % qsize_), h);
    }
    uint16_t idx = static_cast<uint16_t>(first + heads.size());
    if (in.u8() % 64 == 0) idx = static_cast<uint16_t>(first + qsize_ + 1);
    avail_idx_ = idx;
    if (features_ & kVirtioFRingEventIdx) ram_.put<uint16_t>(kAvail + 4 + 2u * qsize_, in.u16());
    std::atomic_ref<uint16_t>(*reinterpret_cast<uint16_t*>(ram_.data() + kAvail + 2))
        .store(idx, std::memory_order_seq_cst);

    // The shadow pops what the device will pop.
    std::vector<DescriptorChain> popped;
    bool fault = false;
    for (;;) {
      auto c = shadow_->pop();
      if (!c) {
        fault = true;
        break;
      }
      if (!*c) break;
      popped.push_back(std::move(**c));
    }
    size_t taken = popped.size();
    popped.clear();

    notify_.signal();
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    for (;;) {
      uint16_t used = std::atomic_ref<uint16_t>(*reinterpret_cast<uint16_t*>(ram_.data() + kUsed + 2))
                          .load(std::memory_order_acquire);
      bool all = static_cast<uint16_t>(used - used_seen_) == taken;
      bool reset_seen = irq_.resets.load() != resets_before_;
      if (reset_seen && !fault) finding("device broke a queue the shadow accepted");
      if (static_cast<uint16_t>(used - used_seen_) > taken) finding("more used entries than chains", used, taken);
      if (all && (reset_seen || !fault)) break;
      if (std::chrono::steady_clock::now() > deadline) finding("requests never answered", used - used_seen_, taken);
      std::this_thread::sleep_for(std::chrono::microseconds(20));
    }
    // Every used element names a head of this batch with a sane length.
    for (size_t i = 0; i < taken; ++i) {
      uint64_t e = kUsed + 4 + 8u * ((used_seen_ + i) % qsize_);
      uint32_t id = ram_.get<uint32_t>(e);
      if (id >= qsize_) finding("used id out of range", id);
    }
    used_seen_ = static_cast<uint16_t>(used_seen_ + taken);
    if (mirror_) apply(models, taken);
    if (fault) {
      blk_->reset();
      activate();
    }
  }

  // Replays the answered chains on the mirror, in order, from the status
  // bytes the device wrote; compares guest RAM.
  void apply(const std::vector<ChainModel>& models, size_t taken) {
    std::vector<std::pair<uint64_t, uint64_t>> touched;
    for (size_t i = 0; i < models.size() && i < taken; ++i) {
      const ChainModel& m = models[i];
      if (!m.modeled) {
        // Without its own status descriptor the chain's last writable data
        // byte is the status byte (a read still runs): forget its buffers.
        for (auto [addr, len] : m.in) std::memset(ram_known_.data() + (addr - kData), 0, len);
        continue;
      }
      uint8_t status = ram_.get<uint8_t>(m.status_gpa);
      if (trace()) {
        std::fprintf(stderr, "chain %zu type %u sector %llu status %u seg %llu+%u in", i, m.type,
                     (unsigned long long)m.sector, status, (unsigned long long)m.seg_sector, m.seg_num);
        for (auto [a, l] : m.in) std::fprintf(stderr, " %#llx+%llu", (unsigned long long)a, (unsigned long long)l);
        std::fprintf(stderr, " out");
        for (auto [a, l] : m.out) std::fprintf(stderr, " %#llx+%llu", (unsigned long long)a, (unsigned long long)l);
        std::fprintf(stderr, "\n");
      }
      if (status == 0xee) finding("answered chain without a status", i);
      if (status > kBlkSUnsupp) finding("bad status value", status);
      uint64_t off = m.sector * kSector;
      if (status != kBlkSOk) {
        // A request that failed in the backend may have moved part of its
        // data: forget what it could have touched.
        if (m.type == kBlkTIn) {
          for (auto [addr, len] : m.in) std::memset(ram_known_.data() + (addr - kData), 0, len);
        }
        if (m.type == kBlkTOut && m.sector < disk_known_.size()) {
          uint64_t total = 0;
          for (auto [addr, len] : m.out) total += len;
          uint64_t end = std::min<uint64_t>(disk_known_.size(), m.sector + total / kSector + 1);
          std::fill(disk_known_.begin() + m.sector, disk_known_.begin() + end, 0);
        }
        continue;
      }
      switch (m.type) {
        case kBlkTIn: {
          touched.insert(touched.end(), m.in.begin(), m.in.end());
          for (auto [addr, len] : m.in) {
            if (off + len > disk_bytes_.size()) finding("read past the end succeeded", off, len);
            std::memcpy(model_ram_.data() + (addr - kData), disk_bytes_.data() + off, len);
            for (uint64_t k = 0; k < len;) {  // known per sector of the disk
              uint64_t n = std::min<uint64_t>(len - k, kSector - (off + k) % kSector);
              std::memset(ram_known_.data() + (addr - kData + k), disk_known_[(off + k) / kSector], n);
              k += n;
            }
            off += len;
          }
          break;
        }
        case kBlkTOut: {
          if (read_only_) finding("write succeeded on a read-only disk");
          std::vector<uint8_t> src, known;
          for (auto [addr, len] : m.out) {
            src.insert(src.end(), model_ram_.begin() + (addr - kData), model_ram_.begin() + (addr - kData + len));
            known.insert(known.end(), ram_known_.begin() + (addr - kData), ram_known_.begin() + (addr - kData + len));
          }
          if (off + src.size() > disk_bytes_.size()) finding("write past the end succeeded", off, src.size());
          if (!src.empty()) std::memcpy(disk_bytes_.data() + off, src.data(), src.size());
          // A sector is known when every byte it was written from is.
          for (uint64_t s = 0; s < src.size(); s += kSector) {
            uint64_t n = std::min<uint64_t>(kSector, src.size() - s);
            bool all = std::memchr(known.data() + s, 0, n) == nullptr;
            disk_known_[(off + s) / kSector] = all;
          }
          break;
        }
        case kBlkTGetId: {
          touched.insert(touched.end(), m.in.begin(), m.in.end());
          const char* id = "fuzz-serial-0123456789";
          uint64_t k = 0;
          for (auto [addr, len] : m.in) {
            for (uint64_t j = 0; j < len && k < kBlkIdBytes; ++j, ++k) {
              model_ram_[addr - kData + j] = static_cast<uint8_t>(id[k]);
              ram_known_[addr - kData + j] = 1;
            }
          }
          break;
        }
        case kBlkTDiscard:
        case kBlkTWriteZeroes: {
          uint64_t start = m.seg_sector * kSector, len = uint64_t{m.seg_num} * kSector;
          if (start + len > disk_bytes_.size()) finding("discard past the end succeeded", start, len);
          for (uint64_t s = start; s < start + len; s += kSector) {
            if (m.type == kBlkTDiscard) {
              disk_known_[s / kSector] = 0;  // contents after discard are unspecified
            } else {
              std::memset(disk_bytes_.data() + s, 0, kSector);
              disk_known_[s / kSector] = 1;
            }
          }
          break;
        }
        default:
          break;
      }
    }
    for (auto [addr, len] : touched) {
      uint64_t base = addr - kData;
      if (std::memcmp(model_ram_.data() + base, ram_.data() + addr, len) == 0) continue;
      for (uint64_t k = base; k < base + len; ++k) {
        if (ram_known_[k] && model_ram_[k] != ram_.data()[kData + k]) {
          finding("guest RAM differs from the mirror", kData + k, model_ram_[k] << 8 | ram_.data()[kData + k]);
        }
      }
    }
  }

  void finish() {
    if (auto r = blk_->close(); !r) finding("close failed", static_cast<uint64_t>(r.error().code));
    uint64_t size = blk_->capacity_sectors() * kSector;
    blk_.reset();
    UniqueFd fd(::open(path_.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) finding("image vanished");
    std::vector<uint8_t>& got = read_back_;
    if (qcow2()) {
      block::qcow2::EngineOptions o;
      o.read_only = true;
      o.warn = [](const std::string&) {};
      auto e = block::qcow2::Engine::open(std::make_unique<block::qcow2::FdHostFile>(std::move(fd)),
                                          path_, o);
      if (!e) finding("image does not reopen", static_cast<uint64_t>(e.error().code));
      if ((*e)->header().incompatible_features & 1) finding("dirty bit left after a clean close");
      auto c = (*e)->check(block::qcow2::Repair::None);
      if (!c) finding("check failed", static_cast<uint64_t>(c.error().code));
      if (c->corruptions != 0) finding("guest requests corrupted the image metadata", c->corruptions);
      if (mirror_) {
        got.resize(size);
        iovec v{got.data(), got.size()};
        if (!(*e)->read(0, std::span<const iovec>(&v, 1), nullptr)) finding("reading the image back failed");
      }
    } else if (mirror_) {
      got.resize(size);
      if (size && ::pread(fd.get(), got.data(), size, 0) != static_cast<ssize_t>(size)) {
        finding("reading the raw file back failed");
      }
    }
    if (mirror_) {
      if (size != disk_bytes_.size()) finding("disk size differs from the mirror", size, disk_bytes_.size());
      for (uint64_t k = 0; k < size; k += kSector) {
        uint64_t n = std::min<uint64_t>(kSector, size - k);
        if (disk_known_[k / kSector] && std::memcmp(got.data() + k, disk_bytes_.data() + k, n) != 0) {
          finding("disk differs from the mirror", k);
        }
      }
    }
    ::unlink(path_.c_str());
  }

  class Ram {
   public:
    uint8_t* data() { return bytes_; }
    template <class T>
    void put(uint64_t gpa, T v) {
      std::memcpy(bytes_ + gpa, &v, sizeof v);
    }
    template <class T>
    T get(uint64_t gpa) {
      T v;
      std::memcpy(&v, bytes_ + gpa, sizeof v);
      return v;
    }

   private:
    // One guest RAM for the process: allocating and zeroing 8 MiB per input
    // would cost more than most inputs.
    static inline uint8_t* bytes_ = new uint8_t[kRam]();
  };

  std::string dir_;
  Ram ram_;
  GuestMemory memory_;
  Backend backend_ = Backend::RawSync;
  uint64_t size_ = 0;
  uint32_t cluster_ = 65536;
  std::string path_;
  bool read_only_ = false;
  std::unique_ptr<block::DiskFile> disk_;
  std::unique_ptr<VirtioBlk> blk_;
  uint64_t features_ = 0;
  uint16_t qsize_ = 0;
  CountingInterrupt irq_;
  int resets_before_ = 0;
  EventFd notify_ = *EventFd::create();
  std::unique_ptr<Virtqueue> shadow_;
  uint16_t avail_idx_ = 0;
  uint16_t used_seen_ = 0;
  uint64_t budget_ = kByteBudget;
  bool mirror_ = false;
  // Process-wide so that their pages are reused, not faulted in per input.
  static inline std::vector<uint8_t> disk_bytes_, disk_known_, model_ram_, ram_known_, read_back_;
  static inline std::map<std::pair<uint64_t, uint32_t>, std::vector<uint8_t>> templates_;
};

inline int count_fds() {
  int n = 0;
  if (DIR* d = ::opendir("/proc/self/fd")) {
    while (::readdir(d)) ++n;
    ::closedir(d);
  }
  return n;
}

inline int count_threads() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("Threads:", 0) == 0) return std::atoi(line.c_str() + 8);
  }
  return -1;
}

// The temp directory for this process (tmpfs when there is one).
inline const std::string& work_dir() {
  static std::string dir = [] {
    std::string base = ::access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    std::string templ = base + "/tern-blk-fuzz-XXXXXX";
    if (!::mkdtemp(templ.data())) finding("mkdtemp failed");
    return templ;
  }();
  static const bool cleanup = std::atexit([] { ::rmdir(work_dir().c_str()); }) == 0;
  (void)cleanup;
  return dir;
}

inline void exercise(const uint8_t* data, size_t size) {
  static int fds = -1, threads = -1;
  {
    Input in(data, size);
    Harness h(work_dir());
    h.run(in);
  }
  // Nothing of an iteration may stay behind (the first iteration sets the
  // baseline: lazily created process-wide state is not a leak).
  // A joined thread is counted in /proc until the kernel has reaped it,
  // a moment after pthread_join returns: look again before calling it a leak.
  int f = count_fds(), t = count_threads();
  for (int i = 0; i < 200 && fds >= 0 && (f > fds || t > threads); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    f = count_fds();
    t = count_threads();
  }
  if (fds < 0) {
    fds = f;
    threads = t;
  } else if (f > fds || t > threads) {
    if (DIR* d = ::opendir("/proc/self/fd")) {  // what they are
      while (dirent* e = ::readdir(d)) {
        char target[256] = {};
        std::string link = std::string("/proc/self/fd/") + e->d_name;
        if (::readlink(link.c_str(), target, sizeof target - 1) > 0) std::fprintf(stderr, "fd %s -> %s\n", e->d_name, target);
      }
      ::closedir(d);
    }
    finding("fds or threads left behind", static_cast<uint64_t>(f - fds), static_cast<uint64_t>(t - threads));
  }
}

}  // namespace tern::devices::fuzz

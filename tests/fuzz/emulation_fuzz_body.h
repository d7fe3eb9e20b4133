// The emulation fallback (vmm/emulation_fallback.h) and its page walk
// (vmm/guest_paging.h) against a hostile guest: random instruction bytes
// over random vCPU state (registers, segments, control registers, EFER,
// pending events) and a small fake guest RAM in two regions whose page
// tables are random bytes with entries planted where a walk will look.
// Shared by the libFuzzer target (emulation_fuzz.cpp) and the replay test
// (tests/vmm/emulation_fuzz_regression_test.cpp).
//
// Oracles besides ASan/UBSan (the instruction bytes and every RAM region
// are heap blocks of their exact size, so a read past either is a report):
// a deferred completion changes nothing; at most one event is injected per
// completion, and none over a pending one; a #PF comes with CR2; RIP moves
// only forward by the instruction's length, and only when it retires or
// raises a trap (#BP, INT n).
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "vmm/emulation_fallback.h"
#include "vmm/guest_paging.h"

namespace tern::vmm::fuzz {

inline void require(bool ok, const char* what) {
  if (ok) return;
  std::fprintf(stderr, "emulation fuzz: %s\n", what);
  std::abort();
}

// Input bytes, zeros once they run out.
class Input {
 public:
  Input(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  uint8_t u8() { return pos_ < size_ ? data_[pos_++] : 0; }
  uint16_t u16() {
    const uint8_t lo = u8();
    return static_cast<uint16_t>(lo | (u8() << 8));
  }
  uint64_t u64() {
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v |= uint64_t{u8()} << (8 * i);
    return v;
  }
  size_t left() const { return size_ - pos_; }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

// RAM: region 0 at guest physical 0 (32 pages), region 1 at 1 MiB (4 pages).
inline constexpr uint64_t kRegion0Pages = 32, kRegion1Gpa = 1 << 20, kRegion1Pages = 4;

// A guest physical page, chosen among both regions and a few outside RAM.
inline uint64_t pick_page(uint8_t b) {
  const unsigned n = b % (kRegion0Pages + kRegion1Pages + 4);
  if (n < kRegion0Pages) return n * 4096ull;
  if (n < kRegion0Pages + kRegion1Pages) return kRegion1Gpa + (n - kRegion0Pages) * 4096ull;
  static constexpr uint64_t outside[4] = {0xfee00000ull, 0x200000ull, 0xfffffffff000ull, 0x100000000ull};
  return outside[n - kRegion0Pages - kRegion1Pages];
}

// A linear address likely to matter: page edges, canonical edges, kernel
// and user halves, or raw input.
inline uint64_t pick_address(Input& in) {
  const uint8_t sel = in.u8();
  const uint64_t low = in.u16();
  switch (sel % 8) {
    case 0: return in.u64();
    case 1: return (uint64_t{in.u8()} << 12) + (low & 0xfff);
    case 2: return 0xffffffff80000000ull + (uint64_t{in.u8()} << 12) + (low & 0xfff);
    case 3: return (uint64_t{in.u8()} << 12) - (low & 7);  // just below a page edge
    case 4: return 0x00007ffffffff000ull + (low & 0xfff);
    case 5: return 0xffff800000000000ull - 4 + (low & 7);
    case 6: {
      const uint64_t hi = in.u8();
      return (hi << 22) + (uint64_t{in.u8()} << 12) + (low & 0xfff);
    }
    default: return low;
  }
}

class FuzzCpu final : public FallbackCpu {
 public:
  SysResult<kvm_regs> get_regs() override { return regs; }
  SysResult<void> set_regs(const kvm_regs& r) override {
    regs = r;
    return {};
  }
  SysResult<kvm_sregs> get_sregs() override { return sregs; }
  SysResult<kvm_fpu> get_fpu() override { return fpu; }
  SysResult<void> set_fpu(const kvm_fpu& f) override {
    fpu = f;
    return {};
  }
  SysResult<kvm_vcpu_events> get_events() override { return events; }
  SysResult<void> set_cr2(uint64_t cr2) override {
    sregs.cr2 = cr2;
    cr2_set = true;
    return {};
  }
  SysResult<void> inject_exception(uint8_t vector, std::optional<uint32_t> error_code) override {
    require(!event_pending_injection(events), "an exception injected over a pending event");
    events.exception.injected = 1;
    events.exception.nr = vector;
    events.exception.has_error_code = error_code.has_value();
    events.exception.error_code = error_code.value_or(0);
    ++injections;
    return {};
  }
  SysResult<void> inject_interrupt(uint8_t vector) override {
    require(!event_pending_injection(events), "an interrupt injected over a pending event");
    events.interrupt.injected = 1;
    events.interrupt.nr = vector;
    ++injections;
    return {};
  }
  bool mxcsr_reachable() const override { return reachable; }

  kvm_regs regs{};
  kvm_sregs sregs{};
  kvm_fpu fpu{};
  kvm_vcpu_events events{};
  bool reachable = true;
  bool cr2_set = false;
  int injections = 0;
};

inline void fill_state(Input& in, FuzzCpu& cpu) {
  kvm_regs& r = cpu.regs;
  __u64* gprs[] = {&r.rax, &r.rcx, &r.rdx, &r.rbx, &r.rsp, &r.rbp, &r.rsi, &r.rdi,
                   &r.r8,  &r.r9,  &r.r10, &r.r11, &r.r12, &r.r13, &r.r14, &r.r15};
  for (__u64* g : gprs) *g = pick_address(in);
  r.rip = pick_address(in);
  const uint64_t flags = in.u8();  // one statement per read: the order is the input's
  r.rflags = 0x2 | (flags & 1) << 6 | ((flags >> 1) & 3) << 12 | ((flags >> 3) & 1) << 17 | ((flags >> 4) & 1) << 18;

  kvm_sregs& s = cpu.sregs;
  const uint8_t c0 = in.u8(), c4 = in.u8(), ef = in.u8();
  s.cr0 = (c0 & 1 ? 1ull : 0) | (c0 & 2 ? 1ull << 31 : 0) | (c0 & 4 ? 1ull << 16 : 0) | (c0 & 8 ? 1ull << 1 : 0) |
          (c0 & 16 ? 1ull << 2 : 0) | (c0 & 32 ? 1ull << 3 : 0) | (c0 & 64 ? 1ull << 18 : 0);
  s.cr4 = (c4 & 1 ? 1ull << 4 : 0) | (c4 & 2 ? 1ull << 5 : 0) | (c4 & 4 ? 1ull << 12 : 0) |
          (c4 & 8 ? 1ull << 9 : 0) | (c4 & 16 ? 1ull << 0 : 0) | (c4 & 32 ? 1ull << 20 : 0) |
          (c4 & 64 ? 1ull << 21 : 0);
  s.efer = (ef & 1 ? 1ull << 10 : 0) | (ef & 2 ? 1ull << 11 : 0) | (ef & 4 ? 1ull << 8 : 0);
  if (ef & 8) {
    s.cr3 = in.u64();
  } else {
    s.cr3 = pick_page(in.u8());
    s.cr3 |= in.u8() & 0xe0;  // PAE: CR3 bits 31:5 place the PDPT
  }
  const uint8_t seg = in.u8();
  s.cs.l = seg & 1;
  s.cs.db = (seg >> 1) & 1;
  s.cs.dpl = (seg >> 2) & 3;
  s.ss.dpl = (seg >> 4) & 3;
  s.cs.base = (seg & 64) ? pick_address(in) : 0;
  s.ss.base = (seg & 128) ? pick_address(in) : 0;
  s.ds.base = pick_address(in);
  s.es.base = pick_address(in);
  s.fs.base = pick_address(in);
  s.gs.base = pick_address(in);
  s.idt.base = pick_address(in);
  s.idt.limit = in.u16();
  s.gdt.base = pick_address(in);
  s.gdt.limit = in.u16();

  const uint8_t ev = in.u8();
  // Pending events in one input of eight, so that most inputs go deeper.
  if ((ev & 7) == 7) {
    cpu.events.exception.injected = (ev >> 3) & 1;
    cpu.events.exception.pending = (ev >> 4) & 1;
    cpu.events.interrupt.injected = (ev >> 5) & 1;
    cpu.events.nmi.injected = (ev >> 6) & 1;
  }
  cpu.reachable = !(ev & 0x80);
  cpu.fpu.mxcsr = static_cast<uint32_t>(in.u64());
}

// Plants page-table entries: at a chosen table page and slot, an entry with
// chosen flags pointing at a chosen page.
inline void plant_entries(Input& in, std::vector<uint8_t>& r0, std::vector<uint8_t>& r1) {
  const unsigned count = in.u8() % 48;
  for (unsigned i = 0; i < count; ++i) {
    const uint64_t table = pick_page(in.u8());
    const unsigned slot = in.u16() % 512;
    const uint8_t flags = in.u8();
    const uint8_t high = in.u8();
    uint64_t entry = pick_page(in.u8()) | flags | 1;  // present, mostly
    if (high & 1) entry |= 1ull << 63;
    if (high & 2) entry &= ~1ull;
    const bool four_byte = high & 4;
    std::vector<uint8_t>* region = nullptr;
    uint64_t off = 0;
    if (table < kRegion0Pages * 4096) {
      region = &r0;
      off = table;
    } else if (table >= kRegion1Gpa && table < kRegion1Gpa + kRegion1Pages * 4096) {
      region = &r1;
      off = table - kRegion1Gpa;
    } else {
      continue;
    }
    if (four_byte) {
      const auto v = static_cast<uint32_t>(entry);
      std::memcpy(region->data() + off + (slot % 1024 / 2) * 4, &v, 4);
    } else {
      std::memcpy(region->data() + off + slot * 8, &entry, 8);
    }
  }
}

inline void exercise(const uint8_t* data, size_t size) {
  Input in(data, size);
  const size_t insn_len = in.u8() % 16;  // 0: fetched from guest memory at CS:RIP
  std::vector<uint8_t> insn(insn_len);
  for (auto& b : insn) b = in.u8();
  // A heap block of exactly the bytes given: a read past them is an ASan report.
  std::unique_ptr<uint8_t[]> insn_block(insn_len ? new uint8_t[insn_len] : nullptr);
  if (insn_len) std::memcpy(insn_block.get(), insn.data(), insn_len);

  FuzzCpu cpu;
  fill_state(in, cpu);
  std::vector<uint8_t> r0(kRegion0Pages * 4096), r1(kRegion1Pages * 4096);
  plant_entries(in, r0, r1);
  // What is left of the input fills region 0 from its end backwards, over
  // the planted entries only where the input is long.
  for (size_t i = 0; in.left() > 0 && i < r0.size(); ++i) r0[r0.size() - 1 - i] ^= in.u8();
  devices::GuestMemory memory({{0, r0.size(), r0.data()}, {kRegion1Gpa, r1.size(), r1.data()}});

  const kvm_regs regs_before = cpu.regs;
  const bool pending = event_pending_injection(cpu.events);
  const std::vector<uint8_t> r0_before = pending ? r0 : std::vector<uint8_t>{};
  auto done = complete_failed_instruction(std::span<const uint8_t>(insn_block.get(), insn_len), cpu, memory);

  require(cpu.injections <= 1, "more than one event injected");
  if (pending) {
    require(done && done->deferred, "a pending event did not defer the completion");
    require(std::memcmp(&cpu.regs, &regs_before, sizeof regs_before) == 0 && r0 == r0_before && !cpu.cr2_set,
            "a deferred completion changed the vCPU or guest RAM");
  }
  if (done && !done->deferred) {
    if (done->fault == 14 && done->op != arch::x86_64::FallbackOp::IntN) require(cpu.cr2_set, "#PF without CR2");
    const uint64_t moved = cpu.regs.rip - regs_before.rip;
    require(moved <= 15, "RIP moved backwards or past 15 bytes");
    const bool trap = done->op == arch::x86_64::FallbackOp::Int3 || done->op == arch::x86_64::FallbackOp::IntN;
    if (done->fault && !trap) require(moved == 0, "a fault moved RIP");
  }

  // The walk alone, for a few more addresses and every kind of access.
  const PagingRegs paging{cpu.sregs.cr0, cpu.sregs.cr3, cpu.sregs.cr4, cpu.sregs.efer, regs_before.rflags,
                          static_cast<unsigned>(cpu.sregs.ss.dpl)};
  Input again(data, size);
  for (int i = 0; i < 4; ++i) {
    const uint64_t linear = pick_address(again);
    const uint8_t k = again.u8();
    auto gpa = walk_guest_page_tables(memory, paging, linear, Access{static_cast<AccessKind>(k % 3), (k & 4) != 0});
    if (!gpa && gpa.error().kind == WalkStop::Kind::PageFault) {
      require(gpa.error().error_code < 32, "a #PF error code with bits the walk never sets");
    }
  }
}

}  // namespace tern::vmm::fuzz

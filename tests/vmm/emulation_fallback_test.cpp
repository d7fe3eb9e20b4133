// The emulation fallback on a fake vCPU: registers, FPU and an identity
// page table in plain structures, guest RAM in a vector.
#include "vmm/emulation_fallback.h"

#include <gtest/gtest.h>

#include <cstring>
#include <vector>

namespace ax = tern::arch::x86_64;
using tern::SysError;
using tern::SysResult;
using tern::vmm::FallbackCpu;
using tern::vmm::FallbackErrorKind;

namespace {

constexpr uint64_t kRamSize = 2 << 20;
constexpr uint64_t kMappedSize = 1 << 20;  // kKernelBase + [0, 1 MiB) maps guest physical [0, 1 MiB)
constexpr uint64_t kTables = 1 << 20;      // page tables are allocated from here up (not mapped)
constexpr uint64_t kKernelBase = 0xffffffff80000000ull;
constexpr uint64_t kUnmapped = 0xffff888000000000ull;
constexpr uint64_t kMmio = kUnmapped + 0x200000;    // mapped, to an address outside RAM
constexpr uint64_t kUser = 0x400000;                // a user page, writable: physical 0x80000
constexpr uint64_t kUserRo = 0x401000;              // a user page, read-only: physical 0x81000
constexpr uint64_t kKernelRo = kKernelBase + 0x90000;  // a supervisor page, read-only
constexpr uint64_t kPteP = 1, kPteW = 2, kPteU = 4, kPteA = 0x20, kPteD = 0x40, kPtePs = 0x80;
constexpr uint64_t kPteNx = 1ull << 63;
constexpr uint64_t kAddrMask = 0x000ffffffffff000ull;
constexpr uint32_t kPfP = 1, kPfW = 2, kPfU = 4, kPfI = 16;

class FakeCpu : public FallbackCpu {
 public:
  FakeCpu() {
    regs.rip = kKernelBase + 0x1000;
    regs.rsp = kKernelBase + 0x8000;
    regs.rflags = 0x2;
    sregs.cr0 = 0x80050033;  // PG, AM, WP, NE, ET, MP, PE
    sregs.cr4 = 0x3406f0;    // includes PAE, OSFXSR and SMAP
    sregs.efer = 0xd01;      // LMA, LME, SCE, NXE
    sregs.cs.l = 1;
    sregs.cs.present = 1;
    fpu.mxcsr = 0x1f80;
  }
  SysResult<kvm_regs> get_regs() override { return regs; }
  SysResult<void> set_regs(const kvm_regs& r) override {
    regs = r;
    ++set_regs_calls;
    return {};
  }
  SysResult<kvm_sregs> get_sregs() override { return sregs; }
  SysResult<kvm_fpu> get_fpu() override { return fpu; }
  SysResult<void> set_fpu(const kvm_fpu& f) override {
    fpu = f;
    return {};
  }
  bool mxcsr_reachable() const override { return fpu_reachable; }
  SysResult<kvm_vcpu_events> get_events() override { return events; }
  SysResult<void> set_cr2(uint64_t cr2) override {
    sregs.cr2 = cr2;
    return {};
  }
  SysResult<void> inject_interrupt(uint8_t vector) override {
    interrupts.push_back(vector);
    events.interrupt.injected = 1;
    events.interrupt.nr = vector;
    return {};
  }
  SysResult<void> inject_exception(uint8_t vector, std::optional<uint32_t> error_code) override {
    injected.push_back(vector);
    last_error_code = error_code;
    events.exception.injected = 1;
    events.exception.nr = vector;
    return {};
  }

  kvm_regs regs{};
  kvm_sregs sregs{};
  kvm_fpu fpu{};
  kvm_vcpu_events events{};
  bool fpu_reachable = true;
  int set_regs_calls = 0;
  std::vector<uint8_t> injected;
  std::vector<uint8_t> interrupts;
  std::optional<uint32_t> last_error_code;
};

class EmulationFallback : public ::testing::Test {
 protected:
  EmulationFallback() : ram(kRamSize), memory({{0, kRamSize, ram.data()}}) {
    cpu.sregs.cr3 = alloc_table();
    for (uint64_t off = 0; off < kMappedSize; off += 4096) map(kKernelBase + off, off, kPteP | kPteW);
    map(kKernelRo, kKernelRo - kKernelBase, kPteP);
    map(kUser, 0x80000, kPteP | kPteW | kPteU);
    map(kUserRo, 0x81000, kPteP | kPteU);
    map(kMmio, 0xfe000000, kPteP | kPteW);
  }
  // One emulation-failure exit; the event injected at the previous one has
  // been delivered by the KVM_RUN in between.
  auto complete(std::vector<uint8_t> bytes) {
    cpu.events = {};
    return tern::vmm::complete_failed_instruction(bytes, cpu, memory);
  }
  uint64_t phys(uint64_t linear) { return linear >= kKernelBase ? linear - kKernelBase : linear; }
  void put32(uint64_t linear, uint32_t v) { std::memcpy(ram.data() + phys(linear), &v, 4); }
  uint32_t get32(uint64_t linear) {
    uint32_t v;
    std::memcpy(&v, ram.data() + phys(linear), 4);
    return v;
  }
  uint64_t get64p(uint64_t pa) {
    uint64_t v;
    std::memcpy(&v, ram.data() + pa, 8);
    return v;
  }
  void put64p(uint64_t pa, uint64_t v) { std::memcpy(ram.data() + pa, &v, 8); }
  uint64_t alloc_table() {
    uint64_t t = next_table_;
    next_table_ += 4096;
    return t;
  }
  // The 4-level PTE for `linear` (created on the way, upper levels P|W|U so
  // that the leaf decides), set to `phys | flags`; returns its physical address.
  uint64_t map(uint64_t linear, uint64_t pa, uint64_t flags) {
    uint64_t table = cpu.sregs.cr3 & kAddrMask;
    for (int level = 3; level > 0; --level) {
      uint64_t slot = table + ((linear >> (12 + 9 * level)) & 511) * 8;
      uint64_t e = get64p(slot);
      if (!(e & kPteP)) {
        e = alloc_table() | kPteP | kPteW | kPteU;
        put64p(slot, e);
      }
      table = e & kAddrMask;
    }
    uint64_t slot = table + ((linear >> 12) & 511) * 8;
    put64p(slot, pa | flags);
    return slot;
  }
  void user_mode() {
    cpu.sregs.cs.dpl = 3;
    cpu.sregs.ss.dpl = 3;
  }

  std::vector<uint8_t> ram;
  tern::devices::GuestMemory memory;
  FakeCpu cpu;
  uint64_t next_table_ = kTables;
};

TEST_F(EmulationFallback, Int3AdvancesRipThenRaisesBreakpoint) {
  uint64_t rip = cpu.regs.rip;
  auto r = complete({0xcc});
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->op, ax::FallbackOp::Int3);
  EXPECT_EQ(r->fault, 3);
  EXPECT_EQ(cpu.regs.rip, rip + 1);  // the handler sees RIP after the int3
  EXPECT_EQ(cpu.injected, std::vector<uint8_t>{3});
  EXPECT_FALSE(cpu.last_error_code);
}

// INT n from user mode (a 32-bit process's system call): the IDT gate's
// checks, then the interrupt with RIP past the instruction.
TEST_F(EmulationFallback, IntNChecksTheGateThenRaisesTheInterrupt) {
  const uint64_t idt = kKernelBase + 0x6000;
  cpu.sregs.idt.base = idt;
  cpu.sregs.idt.limit = 0x82 * 16 - 1;  // gates 0..0x81
  auto gate = [&](uint8_t vec, unsigned dpl, bool present) {
    uint64_t lo = (uint64_t{present} << 47) | (uint64_t{dpl} << 45) | (0xeull << 40);  // 64-bit interrupt gate
    std::memcpy(ram.data() + (idt - kKernelBase) + vec * 16, &lo, 8);
  };
  gate(0x80, 3, true);
  gate(0x81, 0, true);
  gate(0x7f, 3, false);
  cpu.sregs.ss.dpl = 3;
  cpu.regs.rip = kKernelBase + 0x1000;
  auto r = complete({0xcd, 0x80});
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->op, ax::FallbackOp::IntN);
  EXPECT_EQ(cpu.interrupts, std::vector<uint8_t>{0x80});
  EXPECT_EQ(cpu.regs.rip, kKernelBase + 0x1002);
  EXPECT_TRUE(cpu.injected.empty());

  r = complete({0xcd, 0x81});  // DPL 0 gate from CPL 3
  ASSERT_TRUE(r);
  EXPECT_EQ(r->fault, 13);
  EXPECT_EQ(cpu.last_error_code, 0x81u * 8 + 2);
  EXPECT_EQ(cpu.regs.rip, kKernelBase + 0x1002) << "a fault leaves RIP on the int";
  r = complete({0xcd, 0x7f});  // not present
  ASSERT_TRUE(r);
  EXPECT_EQ(r->fault, 11);
  r = complete({0xcd, 0x90});  // beyond the IDT's limit
  ASSERT_TRUE(r);
  EXPECT_EQ(r->fault, 13);
  EXPECT_EQ(cpu.last_error_code, 0x90u * 8 + 2);
  EXPECT_EQ(cpu.interrupts.size(), 1u);
}

// lsl %rax,%rax as Linux's paranoid entry reads its CPU number from the
// CPUNODE descriptor (GDT entry 15, DPL 3, limit = node << 12 | cpu).
TEST_F(EmulationFallback, LslLoadsTheLimitOrClearsZf) {
  const uint64_t gdt = kKernelBase + 0x7000;
  cpu.sregs.gdt.base = gdt;
  cpu.sregs.gdt.limit = 16 * 8 - 1;
  auto put_desc = [&](int index, uint64_t d) { std::memcpy(ram.data() + (gdt - kKernelBase) + index * 8, &d, 8); };
  auto data_desc = [](uint32_t limit, unsigned dpl, bool g) {
    return (limit & 0xffffull) | (uint64_t{(limit >> 16) & 0xf} << 48) | (0x5ull << 40) | (1ull << 44) |
           (uint64_t{dpl} << 45) | (1ull << 47) | (uint64_t{g} << 55);
  };
  put_desc(15, data_desc(0x1003, 3, false));
  put_desc(2, data_desc(0xfffff, 0, true));
  const uint64_t zf = 1u << 6;
  cpu.regs.rax = 15 * 8 + 3;
  cpu.regs.rflags = 0x2;
  uint64_t rip = cpu.regs.rip;
  auto r = complete({0x48, 0x0f, 0x03, 0xc0});  // lsl %rax,%rax
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->op, ax::FallbackOp::Lsl);
  EXPECT_EQ(cpu.regs.rax, 0x1003u);
  EXPECT_TRUE(cpu.regs.rflags & zf);
  EXPECT_EQ(cpu.regs.rip, rip + 4);

  cpu.regs.rcx = 2 * 8;  // a flat data segment, G=1: the limit in bytes
  cpu.regs.rdx = 0xdeadbeefcafef00d;
  ASSERT_TRUE(complete({0x0f, 0x03, 0xd1}));  // lsl %ecx,%edx
  EXPECT_EQ(cpu.regs.rdx, 0xffffffffu);
  EXPECT_TRUE(cpu.regs.rflags & zf);

  cpu.regs.rdx = 0x1111222233334444;
  ASSERT_TRUE(complete({0x66, 0x0f, 0x03, 0xd1}));  // lsl %cx,%dx keeps the upper bits
  EXPECT_EQ(cpu.regs.rdx, 0x111122223333ffffu);

  cpu.sregs.ss.dpl = 3;  // a DPL 0 data segment is invisible from CPL 3
  cpu.regs.rdx = 7;
  ASSERT_TRUE(complete({0x0f, 0x03, 0xd1}));
  EXPECT_EQ(cpu.regs.rdx, 7u);
  EXPECT_FALSE(cpu.regs.rflags & zf);

  cpu.regs.rflags |= zf;
  cpu.regs.rcx = 0;  // the null selector
  ASSERT_TRUE(complete({0x0f, 0x03, 0xd1}));
  EXPECT_FALSE(cpu.regs.rflags & zf);
  cpu.regs.rcx = 40 * 8;  // beyond the GDT's limit
  ASSERT_TRUE(complete({0x0f, 0x03, 0xd1}));
  EXPECT_FALSE(cpu.regs.rflags & zf);
  cpu.regs.rcx = 15 * 8 + 4;  // an LDT selector: not completed
  EXPECT_FALSE(complete({0x0f, 0x03, 0xd1}));
  EXPECT_FALSE(complete({0x0f, 0x03, 0x08}));  // lsl (%rax),%ecx: not completed
  EXPECT_TRUE(cpu.injected.empty());
}

// With EFER.LMA every IDT gate is 16 bytes, in compatibility mode too
// (SDM vol. 3A, 6.14.1): INT n from a 32-bit process reads gate n at n * 16.
TEST_F(EmulationFallback, IntNInCompatibilityModeReadsSixteenByteGates) {
  const uint64_t idt = kKernelBase + 0x6000;
  cpu.sregs.idt.base = idt;
  cpu.sregs.idt.limit = 0x81 * 16 - 1;
  uint64_t lo = (1ull << 47) | (3ull << 45) | (0xeull << 40);  // present, DPL 3, 64-bit interrupt gate
  std::memcpy(ram.data() + (idt - kKernelBase) + 0x80 * 16, &lo, 8);
  cpu.sregs.cs.l = 0;  // compatibility mode, 32-bit code
  cpu.sregs.cs.db = 1;
  user_mode();
  const uint64_t rip = cpu.regs.rip;
  auto r = complete({0xcd, 0x80});
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->fault, 0x80);
  EXPECT_EQ(cpu.interrupts, std::vector<uint8_t>{0x80});
  EXPECT_TRUE(cpu.injected.empty());
  EXPECT_EQ(cpu.regs.rip, rip + 2);

  // The limit must cover all 16 bytes of the gate.
  cpu.sregs.idt.limit = 0x80 * 16 + 7;
  r = complete({0xcd, 0x80});
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->fault, 13);
  EXPECT_EQ(cpu.last_error_code, 0x80u * 8 + 2);
  EXPECT_EQ(cpu.regs.rip, rip + 2);
}

// In IA-32e mode only 64-bit interrupt and trap gates are valid (a task
// gate or a 32-bit gate type is #GP(n*8+2)); in legacy protected mode task,
// 16-bit and 32-bit interrupt/trap gates are.
TEST_F(EmulationFallback, IntNChecksTheGateType) {
  const uint64_t idt = kKernelBase + 0x6000;
  cpu.sregs.idt.base = idt;
  cpu.sregs.idt.limit = 0x100 * 16 - 1;
  for (unsigned type : {0x5u, 0x6u, 0xcu, 0x0u}) {
    SCOPED_TRACE(type);
    uint64_t lo = (1ull << 47) | (3ull << 45) | (uint64_t{type} << 40);
    std::memcpy(ram.data() + (idt - kKernelBase) + 0x80 * 16, &lo, 8);
    auto r = complete({0xcd, 0x80});
    ASSERT_TRUE(r) << r.error().message();
    EXPECT_EQ(r->fault, 13);
    EXPECT_EQ(cpu.last_error_code, 0x80u * 8 + 2);
  }
  EXPECT_TRUE(cpu.interrupts.empty());
}

TEST_F(EmulationFallback, LslIsUndefinedInRealModeAndVirtual8086Mode) {
  const uint64_t gdt = kKernelBase + 0x7000;
  cpu.sregs.gdt.base = gdt;
  cpu.sregs.gdt.limit = 16 * 8 - 1;
  uint64_t flat = 0xffffull | (0xfull << 48) | (0x5ull << 40) | (1ull << 44) | (1ull << 47) | (1ull << 55);
  std::memcpy(ram.data() + 0x7000 + 2 * 8, &flat, 8);
  cpu.regs.rcx = 2 * 8;
  cpu.regs.rdx = 7;
  cpu.sregs.efer = 0;
  cpu.sregs.cs.l = 0;
  cpu.sregs.cs.db = 0;
  cpu.sregs.cr0 = 0x10;  // real mode
  const uint64_t rip = cpu.regs.rip;
  auto r = complete({0x0f, 0x03, 0xd1});
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->fault, 6);
  EXPECT_EQ(cpu.regs.rdx, 7u);
  EXPECT_EQ(cpu.regs.rip, rip);
  cpu.sregs.cr0 = 0x11;           // protected mode...
  cpu.regs.rflags |= 1u << 17;    // ... in a virtual-8086 task
  r = complete({0x0f, 0x03, 0xd1});
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->fault, 6);
  EXPECT_EQ(cpu.regs.rdx, 7u);
  EXPECT_EQ(cpu.regs.rip, rip);
}

// The operand size is CS.D's default, flipped by 0x66 (and 64 with REX.W in
// 64-bit mode): 16-bit code writes 16 bits unless prefixed.
TEST_F(EmulationFallback, LslOperandSizeFollowsTheCodeSegment) {
  const uint64_t gdt = kKernelBase + 0x7000;
  cpu.sregs.gdt.base = gdt;
  cpu.sregs.gdt.limit = 16 * 8 - 1;
  uint64_t flat = 0xffffull | (0xfull << 48) | (0x5ull << 40) | (1ull << 44) | (1ull << 47) | (1ull << 55);
  std::memcpy(ram.data() + 0x7000 + 2 * 8, &flat, 8);
  cpu.regs.rcx = 2 * 8;
  cpu.sregs.cs.l = 0;  // compatibility mode, 16-bit code
  cpu.sregs.cs.db = 0;
  cpu.regs.rdx = 0x1111222233334444;
  ASSERT_TRUE(complete({0x0f, 0x03, 0xd1}));  // lsl %cx,%dx
  EXPECT_EQ(cpu.regs.rdx, 0x111122223333ffffu);
  cpu.regs.rdx = 0x1111222233334444;
  ASSERT_TRUE(complete({0x66, 0x0f, 0x03, 0xd1}));  // lsl %ecx,%edx
  EXPECT_EQ(cpu.regs.rdx, 0xffffffffu);
  cpu.sregs.cs.db = 1;  // 32-bit code
  cpu.regs.rdx = 0x1111222233334444;
  ASSERT_TRUE(complete({0x66, 0x0f, 0x03, 0xd1}));  // lsl %cx,%dx
  EXPECT_EQ(cpu.regs.rdx, 0x111122223333ffffu);
}

// The system descriptor types LSL accepts are IA-32e's whenever EFER.LMA is
// set, compatibility mode included (SDM vol. 2A, LSL): no 16-bit TSS.
TEST_F(EmulationFallback, LslInCompatibilityModeUsesTheIa32eTypes) {
  const uint64_t gdt = kKernelBase + 0x7000;
  cpu.sregs.gdt.base = gdt;
  cpu.sregs.gdt.limit = 16 * 8 - 1;
  uint64_t tss16 = 0x67ull | (0x1ull << 40) | (1ull << 47);  // available 16-bit TSS, DPL 0
  std::memcpy(ram.data() + 0x7000 + 3 * 8, &tss16, 8);
  cpu.sregs.cs.l = 0;
  cpu.sregs.cs.db = 1;
  cpu.regs.rcx = 3 * 8;
  cpu.regs.rdx = 7;
  cpu.regs.rflags |= 1u << 6;
  ASSERT_TRUE(complete({0x0f, 0x03, 0xd1}));
  EXPECT_FALSE(cpu.regs.rflags & (1u << 6));
  EXPECT_EQ(cpu.regs.rdx, 7u);
}

TEST_F(EmulationFallback, ClacAndStacFlipAcOnly) {
  cpu.regs.rflags = 0x46 | (1u << 18);
  uint64_t rip = cpu.regs.rip;
  auto r = complete({0x0f, 0x01, 0xca});
  ASSERT_TRUE(r);
  EXPECT_EQ(cpu.regs.rflags, 0x46u);
  EXPECT_EQ(cpu.regs.rip, rip + 3);
  r = complete({0x0f, 0x01, 0xcb});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->op, ax::FallbackOp::Stac);
  EXPECT_EQ(cpu.regs.rflags, 0x46u | (1u << 18));
  EXPECT_EQ(cpu.regs.rip, rip + 6);
  EXPECT_TRUE(cpu.injected.empty());
}

TEST_F(EmulationFallback, ClacOutsideRingZeroIsUndefined) {
  cpu.sregs.ss.dpl = 3;
  uint64_t rip = cpu.regs.rip;
  auto r = complete({0x0f, 0x01, 0xca});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->fault, 6);
  EXPECT_EQ(cpu.regs.rip, rip);  // a fault: RIP stays on the instruction
}

TEST_F(EmulationFallback, LockPrefixIsUndefined) {
  auto r = complete({0xf0, 0x0f, 0x01, 0xcb});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->fault, 6);
  EXPECT_EQ(cpu.set_regs_calls, 0);
}

TEST_F(EmulationFallback, FwaitRetiresOrRaisesDeviceNotAvailable) {
  uint64_t rip = cpu.regs.rip;
  ASSERT_TRUE(complete({0x9b}));
  EXPECT_EQ(cpu.regs.rip, rip + 1);
  cpu.sregs.cr0 |= 1u << 3;  // TS (MP already set)
  auto r = complete({0x9b});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->fault, 7);
  EXPECT_EQ(cpu.regs.rip, rip + 1);
}

TEST_F(EmulationFallback, LdmxcsrReadsTheStackOperand) {
  put32(cpu.regs.rsp + 4, 0x9fc0);
  uint64_t rip = cpu.regs.rip;
  auto r = complete({0x0f, 0xae, 0x54, 0x24, 0x04});  // ldmxcsr 4(%rsp)
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->op, ax::FallbackOp::Ldmxcsr);
  EXPECT_FALSE(r->fault);
  EXPECT_EQ(cpu.fpu.mxcsr, 0x9fc0u);
  EXPECT_EQ(cpu.regs.rip, rip + 5);
}

TEST_F(EmulationFallback, WhereMxcsrIsOutOfReachLdmxcsrRetiresAndStmxcsrIsRefused) {
  cpu.fpu_reachable = false;
  put32(cpu.regs.rsp + 4, 0x1f80);
  uint64_t rip = cpu.regs.rip;
  auto r = complete({0x0f, 0xae, 0x54, 0x24, 0x04});
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_TRUE(r->mxcsr_not_loaded);
  EXPECT_EQ(cpu.regs.rip, rip + 5);
  put32(cpu.regs.rsp + 4, 0x20000);  // the reserved-bit check still applies
  r = complete({0x0f, 0xae, 0x54, 0x24, 0x04});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->fault, 13);
  cpu.regs.rax = kKernelBase + 0x4000;
  auto s = complete({0x0f, 0xae, 0x18});  // stmxcsr (%rax)
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().kind, FallbackErrorKind::MxcsrUnreachable);
  cpu.regs.rax = kKernelRo;  // a store that faults raises its #PF all the same
  s = complete({0x0f, 0xae, 0x18});
  ASSERT_TRUE(s) << s.error().message();
  EXPECT_EQ(s->fault, 14);
  EXPECT_EQ(cpu.last_error_code, kPfP | kPfW);
  tern::vmm::FallbackCounters c;
  c.count(*r);
  c.count(tern::vmm::FallbackDone{ax::FallbackOp::Ldmxcsr, std::nullopt, true});
  EXPECT_EQ(c.summary(), "ldmxcsr 2 (1 ldmxcsr retired without loading MXCSR: this KVM does not expose it)");
}

TEST_F(EmulationFallback, LdmxcsrAcrossAPageBoundary) {
  cpu.regs.rax = kKernelBase + 0x2ffe;
  put32(cpu.regs.rax, 0x1f00);
  ASSERT_TRUE(complete({0x0f, 0xae, 0x10}));
  EXPECT_EQ(cpu.fpu.mxcsr, 0x1f00u);
}

TEST_F(EmulationFallback, LdmxcsrWithReservedBitsIsGeneralProtection) {
  put32(cpu.regs.rsp + 4, 0x10000);
  uint64_t rip = cpu.regs.rip;
  auto r = complete({0x0f, 0xae, 0x54, 0x24, 0x04});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->fault, 13);
  EXPECT_EQ(cpu.last_error_code, 0u);
  EXPECT_EQ(cpu.fpu.mxcsr, 0x1f80u);
  EXPECT_EQ(cpu.regs.rip, rip);
}

TEST_F(EmulationFallback, SseChecksComeFirst) {
  cpu.sregs.cr4 &= ~(1ull << 9);  // OSFXSR clear
  auto r = complete({0x0f, 0xae, 0x54, 0x24, 0x04});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->fault, 6);
  cpu.sregs.cr4 |= 1ull << 9;
  cpu.sregs.cr0 |= 1ull << 3;  // TS
  r = complete({0x0f, 0xae, 0x54, 0x24, 0x04});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->fault, 7);
}

TEST_F(EmulationFallback, StmxcsrWritesThroughFsBase) {
  cpu.sregs.fs.base = kKernelBase + 0x4000;
  cpu.fpu.mxcsr = 0x1fa0;
  auto r = complete({0x64, 0x0f, 0xae, 0x1c, 0x25, 0x10, 0x00, 0x00, 0x00});  // stmxcsr %fs:0x10
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(get32(kKernelBase + 0x4010), 0x1fa0u);
}

// ---- operands through the guest's page tables, with the access's rights ----

// The fault raised for an access the page tables refuse: #PF with
// `error_code` and CR2, RIP left on the instruction, nothing retired.
#define EXPECT_PAGE_FAULT(r, cr2_, error_code, rip_)        \
  do {                                                      \
    ASSERT_TRUE(r) << r.error().message();                  \
    EXPECT_EQ(r->fault, 14);                                \
    EXPECT_EQ(cpu.last_error_code, (error_code));           \
    EXPECT_EQ(cpu.sregs.cr2, (cr2_));                       \
    EXPECT_EQ(cpu.regs.rip, (rip_));                        \
  } while (0)

// KVM_TRANSLATE walks as the supervisor and says writeable = 1 for every
// page: a write to a read-only page with CR0.WP=1 must still fault.
TEST_F(EmulationFallback, StmxcsrToAReadOnlyPageWithWpIsAPageFault) {
  const uint64_t rip = cpu.regs.rip;
  cpu.regs.rax = kKernelRo + 0x10;
  put32(cpu.regs.rax, 0xaaaa);
  cpu.fpu.mxcsr = 0x1fa0;
  auto r = complete({0x0f, 0xae, 0x18});  // stmxcsr (%rax)
  EXPECT_PAGE_FAULT(r, kKernelRo + 0x10, kPfP | kPfW, rip);
  EXPECT_EQ(get32(kKernelRo + 0x10), 0xaaaau);
  cpu.sregs.cr0 &= ~(1ull << 16);  // WP clear: the supervisor writes read-only pages
  r = complete({0x0f, 0xae, 0x18});
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_FALSE(r->fault);
  EXPECT_EQ(get32(kKernelRo + 0x10), 0x1fa0u);
}

TEST_F(EmulationFallback, UserModeAccessesNeedUserPages) {
  user_mode();
  const uint64_t rip = cpu.regs.rip;
  cpu.regs.rax = kKernelBase + 0x3000;
  auto r = complete({0x0f, 0xae, 0x10});  // ldmxcsr (%rax): a supervisor page
  EXPECT_PAGE_FAULT(r, kKernelBase + 0x3000, kPfP | kPfU, rip);
  cpu.regs.rax = kUser + 8;
  put32(0x80008, 0x1f00);
  r = complete({0x0f, 0xae, 0x10});
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_FALSE(r->fault);
  EXPECT_EQ(cpu.fpu.mxcsr, 0x1f00u);
  cpu.sregs.cr0 &= ~(1ull << 16);  // WP does not matter to user writes
  cpu.regs.rip = rip;
  cpu.regs.rax = kUserRo;
  r = complete({0x0f, 0xae, 0x18});  // stmxcsr to a read-only user page
  EXPECT_PAGE_FAULT(r, kUserRo, kPfP | kPfW | kPfU, rip);
  cpu.regs.rax = kUnmapped + 0x40;
  r = complete({0x0f, 0xae, 0x10});
  EXPECT_PAGE_FAULT(r, kUnmapped + 0x40, kPfU, rip);
}

TEST_F(EmulationFallback, SmapKeepsTheSupervisorOffUserPagesUnlessAc) {
  const uint64_t rip = cpu.regs.rip;
  cpu.regs.rax = kUser;
  put32(0x80000, 0x1f01);
  auto r = complete({0x0f, 0xae, 0x10});
  EXPECT_PAGE_FAULT(r, kUser, kPfP, rip);
  EXPECT_EQ(cpu.fpu.mxcsr, 0x1f80u);
  cpu.regs.rflags |= 1u << 18;  // AC: an explicit access may touch user pages
  r = complete({0x0f, 0xae, 0x10});
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_FALSE(r->fault);
  EXPECT_EQ(cpu.fpu.mxcsr, 0x1f01u);
  cpu.regs.rip = rip;
  cpu.regs.rax = kUserRo;
  r = complete({0x0f, 0xae, 0x18});  // ... but WP still guards a read-only one
  EXPECT_PAGE_FAULT(r, kUserRo, kPfP | kPfW, rip);
  cpu.regs.rflags &= ~(1u << 18);
  cpu.sregs.cr4 &= ~(1ull << 21);  // SMAP off
  cpu.regs.rax = kUser;
  r = complete({0x0f, 0xae, 0x10});
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_FALSE(r->fault);
}

TEST_F(EmulationFallback, OperandsNotMappedAreAPageFaultAndMmioAnError) {
  const uint64_t rip = cpu.regs.rip;
  cpu.regs.rax = kUnmapped + 4;
  auto r = complete({0x0f, 0xae, 0x10});
  EXPECT_PAGE_FAULT(r, kUnmapped + 4, 0u, rip);
  cpu.regs.rax = kMmio + 8;  // mapped to an address outside RAM
  r = complete({0x0f, 0xae, 0x10});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().kind, FallbackErrorKind::OperandNotRam);
  EXPECT_EQ(cpu.fpu.mxcsr, 0x1f80u);
}

TEST_F(EmulationFallback, AWriteThatFaultsOnItsSecondPageWritesNothing) {
  const uint64_t rip = cpu.regs.rip;
  cpu.regs.rax = kKernelRo - 2;
  put32(kKernelRo - 2, 0x55555555);
  cpu.fpu.mxcsr = 0x1fa0;
  auto r = complete({0x0f, 0xae, 0x18});
  EXPECT_PAGE_FAULT(r, kKernelRo, kPfP | kPfW, rip);
  EXPECT_EQ(get32(kKernelRo - 2), 0x55555555u);
}

TEST_F(EmulationFallback, TheWalkSetsAccessedAndDirty) {
  const uint64_t read_pte = map(kKernelBase + 0x3000, 0x3000, kPteP | kPteW);
  const uint64_t write_pte = map(kKernelBase + 0x4000, 0x4000, kPteP | kPteW);
  cpu.regs.rax = kKernelBase + 0x3000;
  ASSERT_TRUE(complete({0x0f, 0xae, 0x10}));
  EXPECT_EQ(get64p(read_pte) & (kPteA | kPteD), kPteA);
  EXPECT_TRUE(get64p(cpu.sregs.cr3 + 511 * 8) & kPteA) << "every level is marked accessed";
  cpu.regs.rax = kKernelBase + 0x4000;
  ASSERT_TRUE(complete({0x0f, 0xae, 0x18}));
  EXPECT_EQ(get64p(write_pte) & (kPteA | kPteD), kPteA | kPteD);
}

TEST_F(EmulationFallback, NonCanonicalOperandIsGeneralProtection) {
  const uint64_t rip = cpu.regs.rip;
  cpu.regs.rax = 0x0000800000003000ull;
  auto r = complete({0x0f, 0xae, 0x10});
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->fault, 13);
  EXPECT_EQ(cpu.last_error_code, 0u);
  EXPECT_EQ(cpu.regs.rip, rip);
  cpu.regs.rsp = 0x0000800000003000ull;
  r = complete({0x0f, 0xae, 0x14, 0x24});  // ldmxcsr (%rsp): the stack segment, #SS(0)
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->fault, 12);
  EXPECT_EQ(cpu.last_error_code, 0u);
}

TEST_F(EmulationFallback, ReservedBitsAreAPageFaultWithRsvd) {
  const uint64_t rip = cpu.regs.rip;
  cpu.sregs.efer &= ~(1ull << 11);  // NXE clear: bit 63 is reserved
  map(kKernelBase + 0x3000, 0x3000, kPteP | kPteW | kPteNx);
  cpu.regs.rax = kKernelBase + 0x3000;
  auto r = complete({0x0f, 0xae, 0x10});
  EXPECT_PAGE_FAULT(r, kKernelBase + 0x3000, kPfP | 8u, rip);
}

// The instruction fetched at CS:RIP when KVM gives no bytes: a fetch, with
// NX, SMEP and the U/S rule, and the I/D bit in the error code.
TEST_F(EmulationFallback, TheFetchAtRipHasFetchRights) {
  const uint64_t rip = cpu.regs.rip;
  ram[0x1000] = 0x0f;
  ram[0x1001] = 0x01;
  ram[0x1002] = 0xcb;  // stac
  map(rip, 0x1000, kPteP | kPteW | kPteNx);
  auto r = complete({});
  EXPECT_PAGE_FAULT(r, rip, kPfP | kPfI, rip);
  EXPECT_EQ(cpu.regs.rflags & (1u << 18), 0u);

  map(rip, 0x1000, kPteP | kPteW);
  cpu.regs.rip = kUser;  // SMEP: the supervisor does not run user pages
  r = complete({});
  EXPECT_PAGE_FAULT(r, kUser, kPfP | kPfI, kUser);

  user_mode();
  cpu.regs.rip = rip;  // a user fetch from a supervisor page
  r = complete({});
  EXPECT_PAGE_FAULT(r, rip, kPfP | kPfU | kPfI, rip);
}

TEST_F(EmulationFallback, AnInstructionRunningIntoANonPresentPageFaultsThere) {
  const uint64_t rip = kKernelBase + kMappedSize - 2;  // the last mapped page's last two bytes
  cpu.regs.rip = rip;
  ram[kMappedSize - 2] = 0x0f;
  ram[kMappedSize - 1] = 0x01;
  auto r = complete({});
  EXPECT_PAGE_FAULT(r, kKernelBase + kMappedSize, kPfI, rip);
}

TEST_F(EmulationFallback, APageTableOutsideRamIsAnError) {
  const uint64_t linear = 0x0000100000000000ull;  // a PML4 slot of its own
  put64p((cpu.sregs.cr3 & kAddrMask) + ((linear >> 39) & 511) * 8, 0xfe000000 | kPteP | kPteW);
  cpu.regs.rax = linear;
  auto r = complete({0x0f, 0xae, 0x10});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().kind, FallbackErrorKind::PageTableNotRam);
  EXPECT_TRUE(cpu.injected.empty());
}

TEST_F(EmulationFallback, FiveLevelPaging) {
  const uint64_t pml5 = alloc_table();
  put64p(pml5 + 511 * 8, cpu.sregs.cr3 | kPteP | kPteW);  // kKernelBase: PML5 index 511
  cpu.sregs.cr3 = pml5;
  cpu.sregs.cr4 |= 1ull << 12;  // LA57
  cpu.regs.rax = kKernelBase + 0x3000;
  put32(cpu.regs.rax, 0x1f02);
  auto r = complete({0x0f, 0xae, 0x10});
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(cpu.fpu.mxcsr, 0x1f02u);
  // 0x0000800000000000 is canonical with 57 bits, and not mapped.
  const uint64_t rip = cpu.regs.rip;
  cpu.regs.rax = 0x0000800000000000ull;
  r = complete({0x0f, 0xae, 0x10});
  EXPECT_PAGE_FAULT(r, 0x0000800000000000ull, 0u, rip);
}

// Legacy protected mode with 32-bit paging: 4-byte entries, a 4 MiB page
// with CR4.PSE, no NX (so no I/D bit for fetches without SMEP).
TEST_F(EmulationFallback, ThirtyTwoBitPaging) {
  const uint64_t pd = alloc_table(), pt = alloc_table();
  auto put32p = [&](uint64_t pa, uint32_t v) { std::memcpy(ram.data() + pa, &v, 4); };
  put32p(pd + 1 * 4, 0x00000000u | 0x83u);                                 // 0x00400000: 4 MiB, P|W|PS
  put32p(pd + 2 * 4, static_cast<uint32_t>(pt) | 0x7u);                    // 0x00800000: a page table, P|W|U
  put32p(pt + 0 * 4, 0x81000u | 0x5u);                                     // 0x00800000 -> 0x81000, P|U, read-only
  cpu.sregs.cr3 = pd;
  cpu.sregs.cr4 = (1ull << 4) | (1ull << 9);  // PSE, OSFXSR
  cpu.sregs.efer = 0;
  cpu.sregs.cs.l = 0;
  cpu.sregs.cs.db = 1;
  cpu.regs.rip = 0x00401000;
  const uint64_t rip = cpu.regs.rip;
  ram[0x3004] = 0x03;
  ram[0x3005] = 0x1f;
  cpu.regs.rax = 0xdead000000403004ull;  // a 32-bit address: the upper half is not used
  auto r = complete({0x0f, 0xae, 0x10});
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(cpu.fpu.mxcsr, 0x1f03u);
  EXPECT_TRUE(get32(pd + 4) & kPteA);
  cpu.regs.rip = rip;
  cpu.regs.rax = 0x00800010;
  r = complete({0x0f, 0xae, 0x18});  // a supervisor write to a read-only page, WP=1
  EXPECT_PAGE_FAULT(r, 0x00800010u, kPfP | kPfW, rip);
  cpu.regs.rax = 0x00c00000;  // no page table there
  r = complete({0x0f, 0xae, 0x10});
  EXPECT_PAGE_FAULT(r, 0x00c00000u, 0u, rip);
  user_mode();
  cpu.regs.rax = 0x00403004;  // the 4 MiB page is the supervisor's
  r = complete({0x0f, 0xae, 0x10});
  EXPECT_PAGE_FAULT(r, 0x00403004u, kPfP | kPfU, rip);
  cpu.regs.rip = 0x00401000;  // a user fetch from the supervisor's page: no I/D (no NX, no SMEP)
  r = complete({});
  EXPECT_PAGE_FAULT(r, 0x00401000u, kPfP | kPfU, 0x00401000u);
}

// PAE paging: the PDPTE from CR3, 8-byte entries, 2 MiB pages, NX with EFER.NXE.
TEST_F(EmulationFallback, PaePaging) {
  const uint64_t pdpt = alloc_table(), pd = alloc_table(), pt = alloc_table();
  put64p(pdpt + 0 * 8, pd | kPteP);
  put64p(pd + 1 * 8, 0x000000 | kPteP | kPteW | kPtePs);      // 0x00200000: 2 MiB -> 0
  put64p(pd + 0 * 8, pt | kPteP | kPteW | kPteU);              // 0x00000000: a page table
  put64p(pt + 5 * 8, 0x5000 | kPteP | kPteW | kPteU | kPteNx);  // 0x5000 -> 0x5000, user, no-execute
  cpu.sregs.cr3 = pdpt;
  cpu.sregs.cr4 = (1ull << 5) | (1ull << 9);  // PAE, OSFXSR
  cpu.sregs.efer = 1ull << 11;                // NXE, no LMA
  cpu.sregs.cs.l = 0;
  cpu.sregs.cs.db = 1;
  cpu.regs.rip = 0x00201000;
  const uint64_t rip = cpu.regs.rip;
  put32(0x3008, 0x1f04);
  cpu.regs.rax = 0x00203008;
  auto r = complete({0x0f, 0xae, 0x10});
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(cpu.fpu.mxcsr, 0x1f04u);
  put32(0x5010, 0x1f05);
  cpu.regs.rax = 0x5010;
  r = complete({0x0f, 0xae, 0x10});
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(cpu.fpu.mxcsr, 0x1f05u);
  EXPECT_EQ(get64p(pt + 5 * 8) & (kPteA | kPteD), kPteA);
  cpu.regs.rip = rip;
  cpu.regs.rax = 0x40000000;  // PDPTE 1 not present
  r = complete({0x0f, 0xae, 0x10});
  EXPECT_PAGE_FAULT(r, 0x40000000u, 0u, rip);
  cpu.regs.rip = 0x5000;  // fetching from a no-execute page
  r = complete({});
  EXPECT_PAGE_FAULT(r, 0x5000u, kPfP | kPfI, 0x5000u);
  put64p(pdpt + 0 * 8, pd | kPteP | kPteW);  // R/W is reserved in a PAE PDPTE
  cpu.regs.rip = rip;
  cpu.regs.rax = 0x00203008;
  r = complete({0x0f, 0xae, 0x10});
  EXPECT_PAGE_FAULT(r, 0x00203008u, kPfP | 8u, rip);
}

// Paging off: linear is physical (32-bit protected mode).
TEST_F(EmulationFallback, WithoutPagingLinearIsPhysical) {
  cpu.sregs.cr0 = 0x11;  // PE, ET
  cpu.sregs.cr4 = 1ull << 9;
  cpu.sregs.efer = 0;
  cpu.sregs.cs.l = 0;
  cpu.sregs.cs.db = 1;
  cpu.sregs.ds.base = 0x1000;
  put32(0x4004, 0x1f06);
  cpu.regs.rax = 0x3004;
  auto r = complete({0x0f, 0xae, 0x10});
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(cpu.fpu.mxcsr, 0x1f06u);
}

// ---- an event already pending injection is left alone ----

TEST_F(EmulationFallback, AnEventPendingInjectionIsNotClobbered) {
  auto pending = [](int which) {
    kvm_vcpu_events e{};
    switch (which) {
      case 0: e.exception.injected = 1; e.exception.nr = 14; e.exception.has_error_code = 1; break;
      case 1: e.exception.pending = 1; e.exception.nr = 6; break;
      case 2: e.interrupt.injected = 1; e.interrupt.nr = 0x30; break;
      default: e.nmi.injected = 1; break;
    }
    return e;
  };
  for (int which = 0; which < 4; ++which) {
    SCOPED_TRACE(which);
    cpu.events = pending(which);
    const uint64_t rip = cpu.regs.rip, rflags = cpu.regs.rflags;
    for (auto bytes : {std::vector<uint8_t>{0xcc}, std::vector<uint8_t>{0xcd, 0x80}, std::vector<uint8_t>{0x0f, 0x01, 0xcb}}) {
      auto r = tern::vmm::complete_failed_instruction(bytes, cpu, memory);
      ASSERT_TRUE(r) << r.error().message();
      EXPECT_TRUE(r->deferred);
      EXPECT_FALSE(r->fault);
      EXPECT_EQ(cpu.regs.rip, rip) << "the instruction runs after the pending event";
      EXPECT_EQ(cpu.regs.rflags, rflags);
      EXPECT_TRUE(cpu.injected.empty());
      EXPECT_TRUE(cpu.interrupts.empty());
      kvm_vcpu_events want = pending(which);
      EXPECT_EQ(std::memcmp(&cpu.events, &want, sizeof want), 0);
    }
  }
}

TEST_F(EmulationFallback, BytesAreFetchedAtRipWhenKvmGivesNone) {
  ram[0x1000] = 0x0f;
  ram[0x1001] = 0x01;
  ram[0x1002] = 0xcb;
  auto r = complete({});
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->op, ax::FallbackOp::Stac);
}

TEST_F(EmulationFallback, UnknownInstructionsAreNotCompleted) {
  auto r = complete({0xf3, 0x48, 0x0f, 0xb8, 0xc7});  // popcnt
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().kind, FallbackErrorKind::Decode);
  EXPECT_EQ(cpu.set_regs_calls, 0);
  EXPECT_TRUE(cpu.injected.empty());
}

TEST(FallbackCounters, SummaryNamesNonZeroKinds) {
  tern::vmm::FallbackCounters c;
  EXPECT_EQ(c.summary(), "");
  c.count({ax::FallbackOp::Int3, 3});
  c.count({ax::FallbackOp::Clac, std::nullopt});
  c.count({ax::FallbackOp::Clac, std::nullopt});
  EXPECT_EQ(c.summary(), "int3 1, clac 2");
  EXPECT_EQ(c.total(), 3u);
}

TEST(FallbackCounters, DeferredAndFetchFaultsAreCountedApart) {
  tern::vmm::FallbackCounters c;
  c.count({ax::FallbackOp::Count, std::nullopt, false, true});
  c.count({ax::FallbackOp::Count, 14});
  c.count({ax::FallbackOp::Int3, 3});
  EXPECT_EQ(c.total(), 1u);
  EXPECT_EQ(c.deferred(), 1u);
  EXPECT_EQ(c.summary(), "int3 1 (1 #PF fetching the instruction) (1 deferred behind an event pending injection)");
}

TEST(EmulationFailureBytes, ReadsKvmRunOnlyWhenFlagged) {
  kvm_run run{};
  run.exit_reason = KVM_EXIT_INTERNAL_ERROR;
  run.emulation_failure.suberror = KVM_INTERNAL_ERROR_EMULATION;
  run.emulation_failure.ndata = 3;
  run.emulation_failure.insn_size = 3;
  run.emulation_failure.insn_bytes[0] = 0x0f;
  EXPECT_TRUE(tern::vmm::emulation_failure_bytes(run).empty());
  run.emulation_failure.flags = KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES;
  EXPECT_EQ(tern::vmm::emulation_failure_bytes(run).size(), 3u);
  run.emulation_failure.insn_size = 200;  // clamped to the array
  EXPECT_EQ(tern::vmm::emulation_failure_bytes(run).size(), 15u);
}

}  // namespace

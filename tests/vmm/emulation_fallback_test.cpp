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

constexpr uint64_t kRamSize = 1 << 20;
constexpr uint64_t kKernelBase = 0xffffffff80000000ull;  // maps to guest physical 0
constexpr uint64_t kUnmapped = 0xffff888000000000ull;

class FakeCpu : public FallbackCpu {
 public:
  FakeCpu() {
    regs.rip = kKernelBase + 0x1000;
    regs.rsp = kKernelBase + 0x8000;
    regs.rflags = 0x2;
    sregs.cr0 = 0x80050033;  // PG, AM, WP, NE, ET, MP, PE
    sregs.cr4 = 0x3406f0;    // includes OSFXSR and SMAP
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
  SysResult<kvm_translation> translate(uint64_t linear) override {
    kvm_translation t{};
    t.linear_address = linear;
    if (linear >= kKernelBase && linear - kKernelBase < kRamSize) {
      t.valid = 1;
      t.writeable = !read_only;
      t.physical_address = linear - kKernelBase;
    } else if (linear >= kUnmapped + kRamSize && linear < kUnmapped + 2 * kRamSize) {
      t.valid = 1;  // mapped, but beyond guest RAM (as MMIO would be)
      t.writeable = 1;
      t.physical_address = 0xfe000000 + (linear - kUnmapped - kRamSize);
    }
    return t;
  }
  bool mxcsr_reachable() const override { return fpu_reachable; }
  SysResult<void> inject_interrupt(uint8_t vector) override {
    interrupts.push_back(vector);
    return {};
  }
  SysResult<void> inject_exception(uint8_t vector, std::optional<uint32_t> error_code) override {
    injected.push_back(vector);
    last_error_code = error_code;
    return {};
  }

  kvm_regs regs{};
  kvm_sregs sregs{};
  kvm_fpu fpu{};
  bool read_only = false;
  bool fpu_reachable = true;
  int set_regs_calls = 0;
  std::vector<uint8_t> injected;
  std::vector<uint8_t> interrupts;
  std::optional<uint32_t> last_error_code;
};

class EmulationFallback : public ::testing::Test {
 protected:
  EmulationFallback() : ram(kRamSize), memory({{0, kRamSize, ram.data()}}) {}
  auto complete(std::vector<uint8_t> bytes) { return tern::vmm::complete_failed_instruction(bytes, cpu, memory); }
  void put32(uint64_t linear, uint32_t v) { std::memcpy(ram.data() + (linear - kKernelBase), &v, 4); }
  uint32_t get32(uint64_t linear) {
    uint32_t v;
    std::memcpy(&v, ram.data() + (linear - kKernelBase), 4);
    return v;
  }

  std::vector<uint8_t> ram;
  tern::devices::GuestMemory memory;
  FakeCpu cpu;
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
  auto s = complete({0x0f, 0xae, 0x18});
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().kind, FallbackErrorKind::MxcsrUnreachable);
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

TEST_F(EmulationFallback, StmxcsrToAReadOnlyPageIsRefused) {
  cpu.read_only = true;
  auto r = complete({0x0f, 0xae, 0x18});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().kind, FallbackErrorKind::OperandNotMapped);
}

TEST_F(EmulationFallback, OperandsOutsideMappedRamAreErrors) {
  cpu.regs.rax = kUnmapped;
  auto r = complete({0x0f, 0xae, 0x10});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().kind, FallbackErrorKind::OperandNotMapped);
  cpu.regs.rax = kUnmapped + kRamSize + 8;  // mapped to an address outside RAM
  r = complete({0x0f, 0xae, 0x10});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().kind, FallbackErrorKind::OperandNotRam);
  EXPECT_EQ(cpu.fpu.mxcsr, 0x1f80u);
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

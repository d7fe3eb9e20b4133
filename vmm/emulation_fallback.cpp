#include "vmm/emulation_fallback.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <variant>

#include "vmm/guest_paging.h"
#include "vmm/kvm.h"

namespace tern::vmm {

namespace ax = tern::arch::x86_64;

namespace {

using Fail = std::unexpected<FallbackError>;

constexpr uint8_t kVectorUd = 6, kVectorNm = 7, kVectorNp = 11, kVectorSs = 12, kVectorGp = 13, kVectorPf = 14,
                  kVectorBp = 3;
constexpr uint64_t kRflagsZf = 1ull << 6, kRflagsAc = 1ull << 18, kRflagsVm = 1ull << 17;
constexpr uint64_t kRflagsIopl = 3ull << 12;
constexpr uint64_t kCr0Pe = 1ull << 0, kCr0Mp = 1ull << 1, kCr0Em = 1ull << 2, kCr0Ts = 1ull << 3;
constexpr uint64_t kCr4Vme = 1ull << 0, kCr4La57 = 1ull << 12, kCr4Osfxsr = 1ull << 9;
constexpr uint64_t kEferLma = 1ull << 10;
constexpr uint64_t kPageSize = 4096;
constexpr uint64_t kLow32 = 0xffffffffull;
constexpr size_t kMaxInsnBytes = 15;
// MXCSR bits 16..31 are reserved: writing one is #GP(0) (SDM vol. 2B,
// LDMXCSR). KVM's FXSAVE image reports MXCSR_MASK 0xffff on every CPU it runs.
constexpr uint32_t kMxcsrReserved = 0xffff0000u;

FallbackError sys_error(const SysError& e) { return FallbackError{FallbackErrorKind::Kvm, {}, e, 0}; }

ax::CodeMode code_mode(const kvm_sregs& s) {
  if (!(s.cr0 & kCr0Pe)) return ax::CodeMode::Bits16;
  if ((s.efer & kEferLma) && s.cs.l) return ax::CodeMode::Bits64;
  return s.cs.db ? ax::CodeMode::Bits32 : ax::CodeMode::Bits16;
}

// The current privilege level: 0 in real mode, 3 in virtual-8086 mode,
// else SS.DPL (as KVM's own get_cpl).
unsigned cpl(const kvm_regs& r, const kvm_sregs& s) {
  if (!(s.cr0 & kCr0Pe)) return 0;
  if (r.rflags & kRflagsVm) return 3;
  return s.ss.dpl;
}

// General-purpose register `index` in encoding order (rax, rcx, rdx, rbx,
// rsp, rbp, rsi, rdi, r8..r15): the one place that order is spelled.
__u64& gpr(kvm_regs& r, int index) {
  __u64* order[16] = {&r.rax, &r.rcx, &r.rdx, &r.rbx, &r.rsp, &r.rbp, &r.rsi, &r.rdi,
                      &r.r8,  &r.r9,  &r.r10, &r.r11, &r.r12, &r.r13, &r.r14, &r.r15};
  return *order[index & 15];
}

std::array<uint64_t, 16> encoding_order(kvm_regs r) {
  std::array<uint64_t, 16> out{};
  for (int i = 0; i < 16; ++i) out[static_cast<size_t>(i)] = gpr(r, i);
  return out;
}

// The segment an operand goes through: its override, else SS for
// rsp/rbp-based operands and DS otherwise (SDM vol. 1, 3.7.4).
ax::SegmentReg operand_segment(const ax::MemOperand& m) {
  if (m.segment != ax::SegmentReg::None) return m.segment;
  return (m.base == 4 || m.base == 5) ? ax::SegmentReg::Ss : ax::SegmentReg::Ds;
}

uint64_t segment_base(const kvm_sregs& s, ax::SegmentReg seg, ax::CodeMode mode) {
  if (mode == ax::CodeMode::Bits64) {
    // In 64-bit mode only FS and GS have a base (SDM vol. 1, 3.4.2.1).
    if (seg == ax::SegmentReg::Fs) return s.fs.base;
    if (seg == ax::SegmentReg::Gs) return s.gs.base;
    return 0;
  }
  switch (seg) {
    case ax::SegmentReg::Es: return s.es.base;
    case ax::SegmentReg::Cs: return s.cs.base;
    case ax::SegmentReg::Ss: return s.ss.base;
    case ax::SegmentReg::Fs: return s.fs.base;
    case ax::SegmentReg::Gs: return s.gs.base;
    default: return s.ds.base;
  }
}

bool canonical(uint64_t linear, bool la57) {
  const unsigned shift = la57 ? 64 - 57 : 64 - 48;
  return static_cast<uint64_t>(static_cast<int64_t>(linear << shift) >> shift) == linear;
}

// What the guest gets instead of the instruction's completion.
struct GuestFault {
  uint8_t vector;
  std::optional<uint32_t> error_code;
  std::optional<uint64_t> cr2;  // #PF: the faulting linear address
};

// Why an access stopped: a fault for the guest, or an error that ends the VM.
using Stop = std::variant<GuestFault, FallbackError>;

// One completion's view of the vCPU.
struct Ctx {
  FallbackCpu& cpu;
  const devices::GuestMemory& memory;
  kvm_regs& regs;
  const kvm_sregs& sregs;
  PagingRegs paging;
  ax::CodeMode mode;
};

// Host bytes for [linear, linear + len) within one page, through the
// guest's page tables walked with `access`'s rights, then the bounds-checked
// guest RAM view.
std::expected<std::span<uint8_t>, Stop> map_linear(const Ctx& c, uint64_t linear, uint64_t len, Access access) {
  auto gpa = walk_guest_page_tables(c.memory, c.paging, linear, access);
  if (!gpa) {
    if (gpa.error().kind == WalkStop::Kind::PageFault) {
      return std::unexpected(GuestFault{kVectorPf, gpa.error().error_code, linear});
    }
    return std::unexpected(FallbackError{FallbackErrorKind::PageTableNotRam, {}, {}, linear});
  }
  auto s = c.memory.span(*gpa, len);
  if (!s) return std::unexpected(FallbackError{FallbackErrorKind::OperandNotRam, {}, {}, linear});
  return *s;
}

// Copies between guest linear memory and `buf` (at most two pages, as every
// access here is 8 bytes or less). Every page is checked before any byte
// moves, so a write that faults on its second page writes nothing.
// `address_mask` wraps the linear address (32 bits outside 64-bit mode).
// With `move` false only the checks are made.
std::expected<void, Stop> access_linear(const Ctx& c, uint64_t linear, std::span<uint8_t> buf, Access access,
                                        uint64_t address_mask, bool move = true) {
  std::array<std::span<uint8_t>, 2> pages{};
  size_t done = 0, n = 0;
  while (done < buf.size()) {
    if (n == pages.size()) return std::unexpected(FallbackError{FallbackErrorKind::OperandNotRam, {}, {}, linear});
    const uint64_t addr = (linear + done) & address_mask;
    const uint64_t chunk = std::min<uint64_t>(buf.size() - done, kPageSize - (addr % kPageSize));
    auto host = map_linear(c, addr, chunk, access);
    if (!host) return std::unexpected(host.error());
    pages[n++] = *host;
    done += chunk;
  }
  done = 0;
  for (size_t i = 0; i < n && move; ++i) {
    if (access.kind == AccessKind::Write) std::memcpy(pages[i].data(), buf.data() + done, pages[i].size());
    else std::memcpy(buf.data() + done, pages[i].data(), pages[i].size());
    done += pages[i].size();
  }
  return {};
}

// Fetches the instruction at CS:RIP with the rights of a fetch at the CPL,
// as many bytes as may be fetched (up to 15); `stop` says why it ended early.
struct Fetched {
  size_t size = 0;
  std::optional<Stop> stop;
};
Fetched fetch_instruction(const Ctx& c, std::span<uint8_t, kMaxInsnBytes> out) {
  Fetched f;
  const bool bits64 = c.mode == ax::CodeMode::Bits64;
  const uint64_t mask = bits64 ? ~0ull : kLow32;
  const uint64_t linear = bits64 ? c.regs.rip : (c.sregs.cs.base + c.regs.rip) & mask;
  while (f.size < out.size()) {
    const uint64_t addr = (linear + f.size) & mask;
    if (bits64 && !canonical(addr, c.sregs.cr4 & kCr4La57)) break;
    const uint64_t chunk = std::min<uint64_t>(out.size() - f.size, kPageSize - (addr % kPageSize));
    auto host = map_linear(c, addr, chunk, Access{AccessKind::Fetch, false});
    if (!host) {
      f.stop = host.error();
      break;
    }
    std::memcpy(out.data() + f.size, host->data(), chunk);
    f.size += chunk;
  }
  return f;
}

// Raises `vector` at the faulting instruction (RIP unchanged: #UD, #GP,
// #NP, #SS, #NM and #PF are faults).
std::expected<FallbackDone, FallbackError> raise(FallbackCpu& cpu, ax::FallbackOp op, uint8_t vector,
                                                 std::optional<uint32_t> error_code = std::nullopt) {
  if (auto r = cpu.inject_exception(vector, error_code); !r) return Fail(sys_error(r.error()));
  return FallbackDone{op, vector};
}

// Raises the guest fault an access stopped on, or ends with its error.
std::expected<FallbackDone, FallbackError> stop(FallbackCpu& cpu, ax::FallbackOp op, const Stop& why) {
  if (const auto* e = std::get_if<FallbackError>(&why)) return Fail(*e);
  const auto& f = std::get<GuestFault>(why);
  if (f.cr2) {
    if (auto r = cpu.set_cr2(*f.cr2); !r) return Fail(sys_error(r.error()));
  }
  return raise(cpu, op, f.vector, f.error_code);
}

std::expected<FallbackDone, FallbackError> retire(FallbackCpu& cpu, ax::FallbackOp op, kvm_regs& regs,
                                                  const ax::DecodedInsn& insn) {
  regs.rip += insn.length;
  if (auto r = cpu.set_regs(regs); !r) return Fail(sys_error(r.error()));
  return FallbackDone{op, std::nullopt};
}

// The SSE state checks common to ldmxcsr and stmxcsr (SDM vol. 2B,
// "Protected Mode Exceptions"): CR0.EM or !CR4.OSFXSR is #UD, CR0.TS is #NM.
std::optional<uint8_t> sse_state_fault(const kvm_sregs& s) {
  if ((s.cr0 & kCr0Em) || !(s.cr4 & kCr4Osfxsr)) return kVectorUd;
  if (s.cr0 & kCr0Ts) return kVectorNm;
  return std::nullopt;
}

// INT n (SDM vol. 2A, INT n; vol. 3A, 6.12.1.1 and 6.14.1): the gate must
// lie inside the IDT, be an interrupt, trap (or, outside IA-32e mode, task)
// gate, allow the CPL, and be present; else #GP / #NP with the error code
// n * 8 + 2 (IDT, not external). With EFER.LMA every gate is 16 bytes,
// compatibility mode included. Then the interrupt is raised with RIP past
// the instruction, as the CPU pushes for INT n.
std::expected<FallbackDone, FallbackError> complete_int_n(const Ctx& c, const ax::DecodedInsn& insn) {
  const kvm_sregs& s = c.sregs;
  if (!(s.cr0 & kCr0Pe)) return Fail(FallbackError{FallbackErrorKind::Decode, ax::DecodeError::Unsupported, {}, 0});
  if (c.regs.rflags & kRflagsVm) {
    // Virtual-8086 mode: IOPL < 3 is #GP(0) without CR4.VME; the VME
    // redirection bitmap in the TSS is not followed here.
    if (s.cr4 & kCr4Vme) return Fail(FallbackError{FallbackErrorKind::Decode, ax::DecodeError::Unsupported, {}, 0});
    if ((c.regs.rflags & kRflagsIopl) != kRflagsIopl) return raise(c.cpu, insn.op, kVectorGp, 0u);
  }
  const bool lma = s.efer & kEferLma;
  const uint64_t gate_size = lma ? 16 : 8;
  const uint32_t idt_error = uint32_t{insn.vector} * 8 + 2;
  if (uint64_t{insn.vector} * gate_size + gate_size - 1 > s.idt.limit) return raise(c.cpu, insn.op, kVectorGp, idt_error);
  uint64_t gate = 0;  // the first 8 bytes hold type, DPL and P in every format
  auto bytes = std::span<uint8_t>(reinterpret_cast<uint8_t*>(&gate), sizeof gate);
  if (auto r = access_linear(c, s.idt.base + insn.vector * gate_size, bytes, Access{AccessKind::Read, true},
                             lma ? ~0ull : kLow32);
      !r) {
    return stop(c.cpu, insn.op, r.error());
  }
  const unsigned type = (gate >> 40) & 0xf, gate_dpl = (gate >> 45) & 3;
  const bool system = !((gate >> 44) & 1), present = (gate >> 47) & 1;
  const bool type_ok = system && (lma ? (type == 0xe || type == 0xf)
                                      : (type == 0x5 || type == 0x6 || type == 0x7 || type == 0xe || type == 0xf));
  if (!type_ok) return raise(c.cpu, insn.op, kVectorGp, idt_error);
  if (cpl(c.regs, s) > gate_dpl) return raise(c.cpu, insn.op, kVectorGp, idt_error);
  if (!present) return raise(c.cpu, insn.op, kVectorNp, idt_error);
  c.regs.rip += insn.length;
  if (auto r = c.cpu.set_regs(c.regs); !r) return Fail(sys_error(r.error()));
  if (auto r = c.cpu.inject_interrupt(insn.vector); !r) return Fail(sys_error(r.error()));
  return FallbackDone{insn.op, insn.vector};
}

// LSL (SDM vol. 2A): #UD in real and virtual-8086 mode; else ZF=1 and the
// limit when the selector names a descriptor LSL may read at this
// privilege, ZF=0 and the destination untouched otherwise. The present bit
// is not checked. The system types allowed are IA-32e mode's whenever
// EFER.LMA is set (compatibility mode too).
std::expected<FallbackDone, FallbackError> complete_lsl(const Ctx& c, const ax::DecodedInsn& insn) {
  const kvm_sregs& s = c.sregs;
  if (!(s.cr0 & kCr0Pe) || (c.regs.rflags & kRflagsVm)) return raise(c.cpu, insn.op, kVectorUd);
  const bool lma = s.efer & kEferLma;
  const uint16_t sel = static_cast<uint16_t>(gpr(c.regs, insn.rm));
  if (sel & 4) return Fail(FallbackError{FallbackErrorKind::Decode, ax::DecodeError::Unsupported, {}, 0});  // LDT
  bool valid = false;
  uint64_t desc = 0;
  const uint64_t index = sel >> 3;
  if (index != 0 && index * 8 + 7 <= s.gdt.limit) {
    auto bytes = std::span<uint8_t>(reinterpret_cast<uint8_t*>(&desc), sizeof desc);
    if (auto r = access_linear(c, s.gdt.base + index * 8, bytes, Access{AccessKind::Read, true}, lma ? ~0ull : kLow32);
        !r) {
      return stop(c.cpu, insn.op, r.error());
    }
    const unsigned type = (desc >> 40) & 0xf, dpl = (desc >> 45) & 3;
    const bool code_or_data = (desc >> 44) & 1;
    const bool conforming_code = code_or_data && (type & 0xc) == 0xc;
    const bool system_ok = lma ? (type == 2 || type == 9 || type == 11)
                               : (type == 1 || type == 2 || type == 3 || type == 9 || type == 11);
    const bool privilege_ok = conforming_code || (dpl >= cpl(c.regs, s) && dpl >= (sel & 3u));
    valid = (code_or_data || system_ok) && privilege_ok;
  }
  if (valid) {
    uint64_t limit = (desc & 0xffff) | ((desc >> 32) & 0xf0000);
    if ((desc >> 55) & 1) limit = (limit << 12) | 0xfff;
    __u64& dst = gpr(c.regs, insn.reg);
    if (insn.operand_bits == 16) dst = (dst & ~uint64_t{0xffff}) | (limit & 0xffff);
    else dst = limit & kLow32;  // 32- and 64-bit forms zero-extend the 32-bit limit
    c.regs.rflags |= kRflagsZf;
  } else {
    c.regs.rflags &= ~kRflagsZf;
  }
  return retire(c.cpu, insn.op, c.regs, insn);
}

std::expected<FallbackDone, FallbackError> complete_mxcsr(const Ctx& c, const ax::DecodedInsn& insn) {
  const kvm_sregs& s = c.sregs;
  if (auto f = sse_state_fault(s)) return raise(c.cpu, insn.op, *f);
  const bool load = insn.op == ax::FallbackOp::Ldmxcsr;
  const ax::SegmentReg seg = operand_segment(*insn.mem);
  const uint64_t next_rip = c.regs.rip + insn.length;
  const bool bits64 = c.mode == ax::CodeMode::Bits64;
  uint64_t linear = segment_base(s, seg, c.mode) + ax::effective_address(*insn.mem, encoding_order(c.regs), next_rip);
  if (!bits64) linear &= kLow32;
  // A non-canonical operand is #SS(0) through SS, else #GP(0) (SDM vol. 2B,
  // LDMXCSR "64-Bit Mode Exceptions"); segment limits are not checked here.
  const bool la57 = s.cr4 & kCr4La57;
  if (bits64 && (!canonical(linear, la57) || !canonical(linear + 3, la57))) {
    return raise(c.cpu, insn.op, seg == ax::SegmentReg::Ss ? kVectorSs : kVectorGp, 0u);
  }
  uint32_t value = 0;
  auto bytes4 = std::span<uint8_t>(reinterpret_cast<uint8_t*>(&value), sizeof value);
  const uint64_t mask = bits64 ? ~0ull : kLow32;
  if (load) {
    if (auto r = access_linear(c, linear, bytes4, Access{AccessKind::Read, false}, mask); !r) {
      return stop(c.cpu, insn.op, r.error());
    }
    if (value & kMxcsrReserved) return raise(c.cpu, insn.op, kVectorGp, 0u);
    if (!c.cpu.mxcsr_reachable()) {
      // The load cannot be carried out on this host. Linux executes
      // ldmxcsr in kernel_fpu_begin to restore the default 0x1f80 that
      // the FPU state already holds outside user-changed modes; retire
      // it, counted apart so that the cost of the gap is visible.
      auto done = retire(c.cpu, insn.op, c.regs, insn);
      if (done) done->mxcsr_not_loaded = true;
      return done;
    }
    auto fpu = c.cpu.get_fpu();
    if (!fpu) return Fail(sys_error(fpu.error()));
    fpu->mxcsr = value;
    if (auto r = c.cpu.set_fpu(*fpu); !r) return Fail(sys_error(r.error()));
    return retire(c.cpu, insn.op, c.regs, insn);
  }
  if (!c.cpu.mxcsr_reachable()) {
    // Storing a value tern cannot read would hand the guest a wrong one.
    // The page walk comes first all the same: a store that would fault
    // raises its #PF whatever MXCSR holds.
    if (auto r = access_linear(c, linear, bytes4, Access{AccessKind::Write, false}, mask, false); !r) {
      return stop(c.cpu, insn.op, r.error());
    }
    return Fail(FallbackError{FallbackErrorKind::MxcsrUnreachable, {}, {}, 0});
  }
  auto fpu = c.cpu.get_fpu();
  if (!fpu) return Fail(sys_error(fpu.error()));
  value = fpu->mxcsr;
  if (auto r = access_linear(c, linear, bytes4, Access{AccessKind::Write, false}, mask); !r) {
    return stop(c.cpu, insn.op, r.error());
  }
  return retire(c.cpu, insn.op, c.regs, insn);
}

template <class T>
SysResult<T> kvm_get(int fd, unsigned long request, const char* name) {
  T v{};
  if (auto r = kvm_ioctl(fd, request, name, &v); !r) return std::unexpected(r.error());
  return v;
}
template <class T>
SysResult<void> kvm_set(int fd, unsigned long request, const char* name, const T& v) {
  T copy = v;
  if (auto r = kvm_ioctl(fd, request, name, &copy); !r) return std::unexpected(r.error());
  return {};
}

}  // namespace

SysResult<kvm_regs> KvmVcpuFallbackCpu::get_regs() { return kvm_get<kvm_regs>(fd_, KVM_GET_REGS, "KVM_GET_REGS"); }
SysResult<void> KvmVcpuFallbackCpu::set_regs(const kvm_regs& r) { return kvm_set(fd_, KVM_SET_REGS, "KVM_SET_REGS", r); }
SysResult<kvm_sregs> KvmVcpuFallbackCpu::get_sregs() {
  return kvm_get<kvm_sregs>(fd_, KVM_GET_SREGS, "KVM_GET_SREGS");
}
SysResult<kvm_fpu> KvmVcpuFallbackCpu::get_fpu() { return kvm_get<kvm_fpu>(fd_, KVM_GET_FPU, "KVM_GET_FPU"); }
SysResult<void> KvmVcpuFallbackCpu::set_fpu(const kvm_fpu& f) { return kvm_set(fd_, KVM_SET_FPU, "KVM_SET_FPU", f); }
SysResult<kvm_vcpu_events> KvmVcpuFallbackCpu::get_events() {
  return kvm_get<kvm_vcpu_events>(fd_, KVM_GET_VCPU_EVENTS, "KVM_GET_VCPU_EVENTS");
}

SysResult<void> KvmVcpuFallbackCpu::set_cr2(uint64_t cr2) {
  // Without KVM_CAP_EXCEPTION_PAYLOAD (tern does not enable it), KVM
  // delivers an injected #PF with CR2 as it stands. KVM_SET_SREGS with what
  // KVM_GET_SREGS gave changes nothing else: no event is pending (checked
  // first), so interrupt_bitmap is empty.
  auto s = get_sregs();
  if (!s) return std::unexpected(s.error());
  s->cr2 = cr2;
  return kvm_set(fd_, KVM_SET_SREGS, "KVM_SET_SREGS", *s);
}

SysResult<void> KvmVcpuFallbackCpu::inject_interrupt(uint8_t vector) {
  // Injected as an interrupt with RIP already past the INT n: delivery
  // pushes RIP as it is. (A "soft" injection would have KVM add an
  // instruction length from the last exit, which an emulation failure
  // does not set.)
  auto events = get_events();
  if (!events) return std::unexpected(events.error());
  if (event_pending_injection(*events)) return std::unexpected(SysError{"KVM_SET_VCPU_EVENTS", EBUSY});
  events->interrupt.injected = 1;
  events->interrupt.nr = vector;
  events->interrupt.soft = 0;
  return kvm_set(fd_, KVM_SET_VCPU_EVENTS, "KVM_SET_VCPU_EVENTS", *events);
}

SysResult<void> KvmVcpuFallbackCpu::inject_exception(uint8_t vector, std::optional<uint32_t> error_code) {
  // Read-modify-write of the vCPU's event state, from its own thread (no
  // KVM_RUN in between). exception.injected queues the exception for the
  // next entry; RIP already says where it is raised. An event already
  // queued is never overwritten (it would be lost).
  auto events = get_events();
  if (!events) return std::unexpected(events.error());
  if (event_pending_injection(*events)) return std::unexpected(SysError{"KVM_SET_VCPU_EVENTS", EBUSY});
  events->exception.injected = 1;
  events->exception.nr = vector;
  events->exception.has_error_code = error_code.has_value();
  events->exception.error_code = error_code.value_or(0);
  return kvm_set(fd_, KVM_SET_VCPU_EVENTS, "KVM_SET_VCPU_EVENTS", *events);
}

bool event_pending_injection(const kvm_vcpu_events& e) {
  return e.exception.injected || e.exception.pending || e.interrupt.injected || e.nmi.injected;
}

SysResult<bool> probe_mxcsr_reachable(int vcpu_fd) {
  constexpr uint32_t kMxcsrReset = 0x1f80;
  auto f = kvm_get<kvm_fpu>(vcpu_fd, KVM_GET_FPU, "KVM_GET_FPU");
  if (!f) return std::unexpected(f.error());
  f->mxcsr = kMxcsrReset;
  if (auto r = kvm_set(vcpu_fd, KVM_SET_FPU, "KVM_SET_FPU", *f); !r) return std::unexpected(r.error());
  auto back = kvm_get<kvm_fpu>(vcpu_fd, KVM_GET_FPU, "KVM_GET_FPU");
  if (!back) return std::unexpected(back.error());
  return back->mxcsr == kMxcsrReset;
}

std::string FallbackError::message() const {
  char addr[32];
  std::snprintf(addr, sizeof addr, "0x%llx", static_cast<unsigned long long>(address));
  switch (kind) {
    case FallbackErrorKind::NoInstructionBytes: return "no instruction bytes at RIP";
    case FallbackErrorKind::Decode: return ax::decode_error_text(decode);
    case FallbackErrorKind::OperandNotRam: return std::string("operand at linear ") + addr + " is not guest RAM";
    case FallbackErrorKind::PageTableNotRam:
      return std::string("a page-table entry for linear ") + addr + " lies outside guest RAM";
    case FallbackErrorKind::Kvm: return sys.message();
    case FallbackErrorKind::MxcsrUnreachable: return "this KVM does not expose the guest's MXCSR";
  }
  return "?";
}

uint64_t FallbackCounters::total() const {
  uint64_t t = 0;
  for (const auto& c : counts_) t += c.load(std::memory_order_relaxed);
  return t;
}

std::string FallbackCounters::summary() const {
  std::string out;
  for (size_t i = 0; i < counts_.size(); ++i) {
    uint64_t n = counts_[i].load(std::memory_order_relaxed);
    if (n == 0) continue;
    if (!out.empty()) out += ", ";
    out += ax::fallback_op_name(static_cast<ax::FallbackOp>(i));
    out += " " + std::to_string(n);
  }
  if (uint64_t n = mxcsr_not_loaded()) {
    out += " (" + std::to_string(n) + " ldmxcsr retired without loading MXCSR: this KVM does not expose it)";
  }
  if (uint64_t n = fetch_faults()) {
    out += (out.empty() ? "" : " ") + std::string("(") + std::to_string(n) + " #PF fetching the instruction)";
  }
  if (uint64_t n = deferred()) {
    out += (out.empty() ? "" : " ") + std::string("(") + std::to_string(n) +
           " deferred behind an event pending injection)";
  }
  return out;
}

std::span<const uint8_t> emulation_failure_bytes(const kvm_run& run) {
  const auto& f = run.emulation_failure;
  if (f.suberror != KVM_INTERNAL_ERROR_EMULATION || f.ndata < 3) return {};
  if (!(f.flags & KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES)) return {};
  size_t n = std::min<size_t>(f.insn_size, sizeof f.insn_bytes);
  return {f.insn_bytes, n};
}

std::expected<FallbackDone, FallbackError> complete_failed_instruction(std::span<const uint8_t> bytes,
                                                                       FallbackCpu& cpu,
                                                                       const devices::GuestMemory& memory) {
  // An event pending injection goes first: nothing is looked at or
  // changed (see the header).
  auto events = cpu.get_events();
  if (!events) return Fail(sys_error(events.error()));
  if (event_pending_injection(*events)) return FallbackDone{ax::FallbackOp::Count, std::nullopt, false, true};
  auto regs = cpu.get_regs();
  if (!regs) return Fail(sys_error(regs.error()));
  auto sregs = cpu.get_sregs();
  if (!sregs) return Fail(sys_error(sregs.error()));
  const ax::CodeMode mode = code_mode(*sregs);
  const PagingRegs paging{sregs->cr0, sregs->cr3, sregs->cr4, sregs->efer, regs->rflags, cpl(*regs, *sregs)};
  const Ctx c{cpu, memory, *regs, *sregs, paging, mode};
  std::array<uint8_t, kMaxInsnBytes> fetched{};
  std::optional<Stop> fetch_stop;
  if (bytes.empty()) {
    Fetched f = fetch_instruction(c, fetched);
    if (f.size == 0 && !f.stop) return Fail(FallbackError{FallbackErrorKind::NoInstructionBytes, {}, {}, regs->rip});
    bytes = std::span<const uint8_t>(fetched.data(), f.size);
    fetch_stop = f.stop;
  }
  auto insn = ax::decode_fallback_insn(bytes, mode);
  if (!insn) {
    // The instruction runs on into bytes that could not be fetched: the
    // fetch's own fault (a #PF with I/D), as the CPU would raise it.
    if (insn.error() == ax::DecodeError::Truncated && fetch_stop) {
      return stop(cpu, ax::FallbackOp::Count, *fetch_stop);
    }
    if (bytes.empty()) return Fail(FallbackError{FallbackErrorKind::NoInstructionBytes, {}, {}, regs->rip});
    return Fail(FallbackError{FallbackErrorKind::Decode, insn.error(), {}, 0});
  }
  if (insn->lock) return raise(cpu, insn->op, kVectorUd);  // LOCK is #UD for every entry

  switch (insn->op) {
    case ax::FallbackOp::IntN:
      return complete_int_n(c, *insn);
    case ax::FallbackOp::Int3:
      // A trap: the handler sees RIP after the int3 (SDM vol. 3A, 6.5), which
      // Linux's int3 self-test checks.
      regs->rip += insn->length;
      if (auto r = cpu.set_regs(*regs); !r) return Fail(sys_error(r.error()));
      return raise(cpu, insn->op, kVectorBp);
    case ax::FallbackOp::Clac:
    case ax::FallbackOp::Stac:
      // #UD at CPL > 0, virtual-8086 mode included (SDM vol. 2A,
      // CLAC/STAC). CPUID.7.EBX.SMAP is the guest's: tern only sees these
      // exits from guests that were offered it.
      if (cpl(*regs, *sregs) != 0) return raise(cpu, insn->op, kVectorUd);
      if (insn->op == ax::FallbackOp::Clac) regs->rflags &= ~kRflagsAc;
      else regs->rflags |= kRflagsAc;
      return retire(cpu, insn->op, *regs, *insn);
    case ax::FallbackOp::Fwait:
      // #NM when CR0.MP and CR0.TS are both set; KVM keeps no pending x87
      // exception in the FPU image, so otherwise there is nothing to wait for.
      if ((sregs->cr0 & kCr0Mp) && (sregs->cr0 & kCr0Ts)) return raise(cpu, insn->op, kVectorNm);
      return retire(cpu, insn->op, *regs, *insn);
    case ax::FallbackOp::Ldmxcsr:
    case ax::FallbackOp::Stmxcsr:
      return complete_mxcsr(c, *insn);
    case ax::FallbackOp::Lsl:
      return complete_lsl(c, *insn);
    case ax::FallbackOp::Count:
      break;
  }
  return Fail(FallbackError{FallbackErrorKind::Decode, ax::DecodeError::NotInTable, {}, 0});
}

}  // namespace tern::vmm

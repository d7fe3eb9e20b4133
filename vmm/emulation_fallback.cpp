#include "vmm/emulation_fallback.h"

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "vmm/kvm.h"

namespace tern::vmm {

namespace ax = tern::arch::x86_64;

namespace {

using Fail = std::unexpected<FallbackError>;

constexpr uint8_t kVectorUd = 6, kVectorNm = 7, kVectorNp = 11, kVectorGp = 13, kVectorBp = 3;
constexpr uint64_t kRflagsAc = 1ull << 18;
constexpr uint64_t kCr0Pe = 1ull << 0, kCr0Mp = 1ull << 1, kCr0Em = 1ull << 2, kCr0Ts = 1ull << 3;
constexpr uint64_t kCr4Osfxsr = 1ull << 9;
constexpr uint64_t kEferLma = 1ull << 10;
constexpr uint64_t kPageSize = 4096;
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

// The current privilege level: SS.DPL in protected mode (as KVM's own
// get_cpl), 0 in real mode.
unsigned cpl(const kvm_sregs& s) { return (s.cr0 & kCr0Pe) ? s.ss.dpl : 0; }

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

uint64_t segment_base(const kvm_sregs& s, const ax::MemOperand& m, ax::CodeMode mode) {
  ax::SegmentReg seg = m.segment;
  if (seg == ax::SegmentReg::None) {
    // SS for rsp/rbp-based operands, DS otherwise (SDM vol. 1, 3.7.4).
    seg = (m.base == 4 || m.base == 5) ? ax::SegmentReg::Ss : ax::SegmentReg::Ds;
  }
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

// Host bytes for [linear, linear + len) within one page, through the
// guest's page tables and then the bounds-checked guest RAM view.
std::expected<std::span<uint8_t>, FallbackError> map_linear(FallbackCpu& cpu, const devices::GuestMemory& memory,
                                                            uint64_t linear, uint64_t len, bool write) {
  auto t = cpu.translate(linear);
  if (!t) return Fail(sys_error(t.error()));
  if (!t->valid || (write && !t->writeable)) {
    return Fail(FallbackError{FallbackErrorKind::OperandNotMapped, {}, {}, linear});
  }
  auto s = memory.span(t->physical_address, len);
  if (!s) return Fail(FallbackError{FallbackErrorKind::OperandNotRam, {}, {}, linear});
  return *s;
}

// Copies between guest linear memory and `buf`, page by page.
std::expected<void, FallbackError> access_linear(FallbackCpu& cpu, const devices::GuestMemory& memory,
                                                 uint64_t linear, std::span<uint8_t> buf, bool write) {
  size_t done = 0;
  while (done < buf.size()) {
    uint64_t addr = linear + done;
    uint64_t chunk = std::min<uint64_t>(buf.size() - done, kPageSize - (addr % kPageSize));
    auto host = map_linear(cpu, memory, addr, chunk, write);
    if (!host) return std::unexpected(host.error());
    if (write) std::memcpy(host->data(), buf.data() + done, chunk);
    else std::memcpy(buf.data() + done, host->data(), chunk);
    done += chunk;
  }
  return {};
}

// Fetches the instruction at CS:RIP, as many bytes as are mapped (up to 15).
size_t fetch_instruction(FallbackCpu& cpu, const devices::GuestMemory& memory, const kvm_regs& regs,
                         const kvm_sregs& sregs, std::span<uint8_t, kMaxInsnBytes> out) {
  uint64_t linear = sregs.cs.base + regs.rip;
  if (code_mode(sregs) == ax::CodeMode::Bits64) linear = regs.rip;
  size_t got = 0;
  while (got < out.size()) {
    uint64_t addr = linear + got;
    uint64_t chunk = std::min<uint64_t>(out.size() - got, kPageSize - (addr % kPageSize));
    auto host = map_linear(cpu, memory, addr, chunk, false);
    if (!host) break;
    std::memcpy(out.data() + got, host->data(), chunk);
    got += chunk;
  }
  return got;
}

// Raises `vector` at the faulting instruction (RIP unchanged: #UD, #GP and
// #NM are faults).
std::expected<FallbackDone, FallbackError> raise(FallbackCpu& cpu, ax::FallbackOp op, uint8_t vector,
                                                 std::optional<uint32_t> error_code = std::nullopt) {
  if (auto r = cpu.inject_exception(vector, error_code); !r) return Fail(sys_error(r.error()));
  return FallbackDone{op, vector};
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
SysResult<kvm_translation> KvmVcpuFallbackCpu::translate(uint64_t linear) {
  kvm_translation t{};
  t.linear_address = linear;
  if (auto r = kvm_ioctl(fd_, KVM_TRANSLATE, "KVM_TRANSLATE", &t); !r) return std::unexpected(r.error());
  return t;
}
SysResult<void> KvmVcpuFallbackCpu::inject_interrupt(uint8_t vector) {
  // Injected as an interrupt with RIP already past the INT n: delivery
  // pushes RIP as it is. (A "soft" injection would have KVM add an
  // instruction length from the last exit, which an emulation failure
  // does not set.)
  auto events = kvm_get<kvm_vcpu_events>(fd_, KVM_GET_VCPU_EVENTS, "KVM_GET_VCPU_EVENTS");
  if (!events) return std::unexpected(events.error());
  events->interrupt.injected = 1;
  events->interrupt.nr = vector;
  events->interrupt.soft = 0;
  return kvm_set(fd_, KVM_SET_VCPU_EVENTS, "KVM_SET_VCPU_EVENTS", *events);
}

SysResult<void> KvmVcpuFallbackCpu::inject_exception(uint8_t vector, std::optional<uint32_t> error_code) {
  // Read-modify-write of the vCPU's event state, from its own thread (no
  // KVM_RUN in between). exception.injected queues the exception for the
  // next entry; RIP already says where it is raised.
  auto events = kvm_get<kvm_vcpu_events>(fd_, KVM_GET_VCPU_EVENTS, "KVM_GET_VCPU_EVENTS");
  if (!events) return std::unexpected(events.error());
  events->exception.injected = 1;
  events->exception.nr = vector;
  events->exception.has_error_code = error_code.has_value();
  events->exception.error_code = error_code.value_or(0);
  return kvm_set(fd_, KVM_SET_VCPU_EVENTS, "KVM_SET_VCPU_EVENTS", *events);
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
    case FallbackErrorKind::OperandNotMapped: return std::string("operand at linear ") + addr + " is not mapped";
    case FallbackErrorKind::OperandNotRam: return std::string("operand at linear ") + addr + " is not guest RAM";
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
  auto regs = cpu.get_regs();
  if (!regs) return Fail(sys_error(regs.error()));
  auto sregs = cpu.get_sregs();
  if (!sregs) return Fail(sys_error(sregs.error()));
  std::array<uint8_t, kMaxInsnBytes> fetched{};
  if (bytes.empty()) {
    size_t n = fetch_instruction(cpu, memory, *regs, *sregs, fetched);
    if (n == 0) return Fail(FallbackError{FallbackErrorKind::NoInstructionBytes, {}, {}, regs->rip});
    bytes = std::span<const uint8_t>(fetched.data(), n);
  }
  const ax::CodeMode mode = code_mode(*sregs);
  auto insn = ax::decode_fallback_insn(bytes, mode);
  if (!insn) return Fail(FallbackError{FallbackErrorKind::Decode, insn.error(), {}, 0});
  if (insn->lock) return raise(cpu, insn->op, kVectorUd);  // LOCK is #UD for every entry

  switch (insn->op) {
    case ax::FallbackOp::IntN: {
      // Protected-mode delivery checks (SDM vol. 3A, 6.12.1.1 and INT n):
      // the gate must lie inside the IDT and be present, and a software
      // interrupt needs CPL <= the gate's DPL, else #GP / #NP with the
      // error code vector * 8 + 2 (IDT, external 0). Then it is raised with
      // RIP past the instruction, as the CPU pushes for INT n.
      if (!(sregs->cr0 & kCr0Pe)) return Fail(FallbackError{FallbackErrorKind::Decode, ax::DecodeError::Unsupported, {}, 0});
      const uint64_t gate_size = mode == ax::CodeMode::Bits64 ? 16 : 8;
      const uint32_t idt_error = uint32_t{insn->vector} * 8 + 2;
      if (uint64_t{insn->vector} * gate_size + gate_size - 1 > sregs->idt.limit) {
        return raise(cpu, insn->op, kVectorGp, idt_error);
      }
      uint64_t gate_lo = 0;
      auto gate = std::span<uint8_t>(reinterpret_cast<uint8_t*>(&gate_lo), sizeof gate_lo);
      if (auto r = access_linear(cpu, memory, sregs->idt.base + insn->vector * gate_size, gate, false); !r) {
        return Fail(r.error());
      }
      const unsigned gate_dpl = (gate_lo >> 45) & 3;
      const bool present = (gate_lo >> 47) & 1;
      if (cpl(*sregs) > gate_dpl) return raise(cpu, insn->op, kVectorGp, idt_error);
      if (!present) return raise(cpu, insn->op, kVectorNp, idt_error);
      regs->rip += insn->length;
      if (auto r = cpu.set_regs(*regs); !r) return Fail(sys_error(r.error()));
      if (auto r = cpu.inject_interrupt(insn->vector); !r) return Fail(sys_error(r.error()));
      return FallbackDone{insn->op, insn->vector};
    }
    case ax::FallbackOp::Int3:
      // A trap: the handler sees RIP after the int3 (SDM vol. 3A, 6.5), which
      // Linux's int3 self-test checks.
      regs->rip += insn->length;
      if (auto r = cpu.set_regs(*regs); !r) return Fail(sys_error(r.error()));
      return raise(cpu, insn->op, kVectorBp);
    case ax::FallbackOp::Clac:
    case ax::FallbackOp::Stac:
      // #UD at CPL > 0 (SDM vol. 2A, CLAC/STAC). CPUID.7.EBX.SMAP is the
      // guest's: tern only sees these exits from guests that were offered it.
      if (cpl(*sregs) != 0) return raise(cpu, insn->op, kVectorUd);
      if (insn->op == ax::FallbackOp::Clac) regs->rflags &= ~kRflagsAc;
      else regs->rflags |= kRflagsAc;
      return retire(cpu, insn->op, *regs, *insn);
    case ax::FallbackOp::Fwait:
      // #NM when CR0.MP and CR0.TS are both set; KVM keeps no pending x87
      // exception in the FPU image, so otherwise there is nothing to wait for.
      if ((sregs->cr0 & kCr0Mp) && (sregs->cr0 & kCr0Ts)) return raise(cpu, insn->op, kVectorNm);
      return retire(cpu, insn->op, *regs, *insn);
    case ax::FallbackOp::Ldmxcsr:
    case ax::FallbackOp::Stmxcsr: {
      if (auto f = sse_state_fault(*sregs)) return raise(cpu, insn->op, *f);
      if (insn->op == ax::FallbackOp::Stmxcsr && !cpu.mxcsr_reachable()) {
        // Storing a value tern cannot read would hand the guest a wrong one.
        return Fail(FallbackError{FallbackErrorKind::MxcsrUnreachable, {}, {}, 0});
      }
      auto gprs = encoding_order(*regs);
      const uint64_t next_rip = regs->rip + insn->length;
      uint64_t linear = segment_base(*sregs, *insn->mem, mode) + ax::effective_address(*insn->mem, gprs, next_rip);
      if (mode != ax::CodeMode::Bits64) linear &= 0xffffffffull;
      auto fpu = cpu.get_fpu();
      if (!fpu) return Fail(sys_error(fpu.error()));
      uint32_t value = 0;
      auto bytes4 = std::span<uint8_t>(reinterpret_cast<uint8_t*>(&value), sizeof value);
      if (insn->op == ax::FallbackOp::Ldmxcsr) {
        if (auto r = access_linear(cpu, memory, linear, bytes4, false); !r) return Fail(r.error());
        if (value & kMxcsrReserved) return raise(cpu, insn->op, kVectorGp, 0u);
        if (!cpu.mxcsr_reachable()) {
          // The load cannot be carried out on this host. Linux executes
          // ldmxcsr in kernel_fpu_begin to restore the default 0x1f80 that
          // the FPU state already holds outside user-changed modes; retire
          // it, counted apart so that the cost of the gap is visible.
          auto done = retire(cpu, insn->op, *regs, *insn);
          if (done) done->mxcsr_not_loaded = true;
          return done;
        }
        fpu->mxcsr = value;
        if (auto r = cpu.set_fpu(*fpu); !r) return Fail(sys_error(r.error()));
      } else {
        value = fpu->mxcsr;
        if (auto r = access_linear(cpu, memory, linear, bytes4, true); !r) return Fail(r.error());
      }
      return retire(cpu, insn->op, *regs, *insn);
    }
    case ax::FallbackOp::Lsl: {
      // LSL (SDM vol. 2A): ZF=1 and the limit when the selector names a
      // descriptor LSL may read at this privilege, else ZF=0 and the
      // destination untouched. The present bit is not checked.
      constexpr uint64_t kRflagsZf = 1ull << 6;
      const uint16_t sel = static_cast<uint16_t>(gpr(*regs, insn->rm));
      if (sel & 4) return Fail(FallbackError{FallbackErrorKind::Decode, ax::DecodeError::Unsupported, {}, 0});  // LDT
      bool valid = false;
      uint64_t desc = 0;
      const uint64_t index = sel >> 3;
      if (index != 0 && index * 8 + 7 <= sregs->gdt.limit) {
        auto bytes8 = std::span<uint8_t>(reinterpret_cast<uint8_t*>(&desc), sizeof desc);
        if (auto r = access_linear(cpu, memory, sregs->gdt.base + index * 8, bytes8, false); !r) {
          return Fail(r.error());
        }
        const unsigned type = (desc >> 40) & 0xf, dpl = (desc >> 45) & 3;
        const bool code_or_data = (desc >> 44) & 1;
        const bool conforming_code = code_or_data && (type & 0xc) == 0xc;
        const bool system_ok = mode == ax::CodeMode::Bits64
                                   ? (type == 2 || type == 9 || type == 11)
                                   : (type == 1 || type == 2 || type == 3 || type == 9 || type == 11);
        const bool privilege_ok = conforming_code || (dpl >= cpl(*sregs) && dpl >= (sel & 3u));
        valid = (code_or_data || system_ok) && privilege_ok;
      }
      if (valid) {
        uint64_t limit = (desc & 0xffff) | ((desc >> 32) & 0xf0000);
        if ((desc >> 55) & 1) limit = (limit << 12) | 0xfff;
        __u64& dst = gpr(*regs, insn->reg);
        if (insn->operand_bits == 16) dst = (dst & ~uint64_t{0xffff}) | (limit & 0xffff);
        else dst = limit & 0xffffffffull;  // 32- and 64-bit forms zero-extend the 32-bit limit
        regs->rflags |= kRflagsZf;
      } else {
        regs->rflags &= ~kRflagsZf;
      }
      return retire(cpu, insn->op, *regs, *insn);
    }
    case ax::FallbackOp::Count:
      break;
  }
  return Fail(FallbackError{FallbackErrorKind::Decode, ax::DecodeError::NotInTable, {}, 0});
}

}  // namespace tern::vmm

// EmulationFallback: completes, in the VMM, the instructions that KVM's
// instruction emulator gives up on (KVM_EXIT_INTERNAL_ERROR with suberror
// KVM_INTERNAL_ERROR_EMULATION).
//
// Why: on a nested, software-emulated KVM (kvm_pvm, the hosts our CI runs
// on) the guest kernel's supervisor code runs in KVM's emulator, which lacks
// a few instructions every Linux boot executes: int3 (the alternatives
// self-test and text patching), clac/stac (SMAP, on every user access),
// fwait, and ldmxcsr (kernel_fpu_begin). On hardware KVM these never exit,
// so this code only runs where the emulator is in the loop.
//
// The table is arch::x86_64::FallbackOp; anything outside it ends the VM
// (exit status 3) as before, with the instruction bytes in the report.
// Each completion follows the SDM's checks for its instruction and raises
// the architectural fault (#UD, #GP, #NP, #SS, #NM, #PF) instead of
// completing when a check fails. Memory operands, the IDT and the GDT are
// reached through the guest's page tables walked with the access's own
// rights (vmm/guest_paging.h), not through KVM_TRANSLATE.
//
// An event already pending injection (KVM_GET_VCPU_EVENTS) is never
// overwritten: the completion is deferred instead (FallbackDone::deferred),
// with nothing changed. The pending event belongs before the instruction
// (an interrupt or exception whose delivery an exit cut short, re-injected
// at the next entry with RIP on this instruction), so the guest's next entry
// delivers it and, once its handler returns, the instruction exits again
// and is completed then.
//
// Threads: complete() runs on the vCPU thread that took the exit; the
// counters are atomics read by whoever reports them.
#pragma once

#include <linux/kvm.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <expected>
#include <optional>
#include <span>
#include <string>

#include "arch/x86_64/insn_decode.h"
#include "base/error.h"
#include "devices/guest_memory.h"

namespace tern::vmm {

// What a completion needs from one vCPU. Vcpu implements it with ioctls on
// its fd; tests implement it with plain structures.
class FallbackCpu {
 public:
  virtual ~FallbackCpu() = default;
  [[nodiscard]] virtual SysResult<kvm_regs> get_regs() = 0;
  [[nodiscard]] virtual SysResult<void> set_regs(const kvm_regs& regs) = 0;
  [[nodiscard]] virtual SysResult<kvm_sregs> get_sregs() = 0;
  [[nodiscard]] virtual SysResult<kvm_fpu> get_fpu() = 0;
  [[nodiscard]] virtual SysResult<void> set_fpu(const kvm_fpu& fpu) = 0;
  // The vCPU's event state (KVM_GET_VCPU_EVENTS).
  [[nodiscard]] virtual SysResult<kvm_vcpu_events> get_events() = 0;
  // CR2, for a #PF about to be injected (KVM takes it from there).
  [[nodiscard]] virtual SysResult<void> set_cr2(uint64_t cr2) = 0;
  // Queues exception `vector` for the next entry (KVM_SET_VCPU_EVENTS).
  // Refused (EBUSY) when an event is already pending injection.
  [[nodiscard]] virtual SysResult<void> inject_exception(uint8_t vector, std::optional<uint32_t> error_code) = 0;
  // Queues interrupt `vector` for the next entry, delivered through the
  // guest's IDT with RIP as it is (INT n, after its checks). Refused (EBUSY)
  // when an event is already pending injection.
  [[nodiscard]] virtual SysResult<void> inject_interrupt(uint8_t vector) = 0;
  // Whether KVM_GET_FPU/KVM_SET_FPU reach the guest's MXCSR. kvm_pvm keeps
  // the guest FPU state out of reach (KVM_GET_FPU answers zeros, KVM_SET_FPU
  // is ignored, KVM_GET_XSAVE fails); see probe_mxcsr_reachable().
  virtual bool mxcsr_reachable() const = 0;
};

// FallbackCpu over a vCPU fd, for the thread that runs that vCPU.
class KvmVcpuFallbackCpu final : public FallbackCpu {
 public:
  KvmVcpuFallbackCpu(int vcpu_fd, bool mxcsr_reachable) : fd_(vcpu_fd), mxcsr_reachable_(mxcsr_reachable) {}
  SysResult<kvm_regs> get_regs() override;
  SysResult<void> set_regs(const kvm_regs& regs) override;
  SysResult<kvm_sregs> get_sregs() override;
  SysResult<kvm_fpu> get_fpu() override;
  SysResult<void> set_fpu(const kvm_fpu& fpu) override;
  SysResult<kvm_vcpu_events> get_events() override;
  SysResult<void> set_cr2(uint64_t cr2) override;
  SysResult<void> inject_exception(uint8_t vector, std::optional<uint32_t> error_code) override;
  SysResult<void> inject_interrupt(uint8_t vector) override;
  bool mxcsr_reachable() const override { return mxcsr_reachable_; }

 private:
  int fd_;
  bool mxcsr_reachable_;
};

// Sets MXCSR to its reset value 0x1f80 with KVM_SET_FPU and reads it back:
// true when the value arrives, false when this KVM keeps the guest's FPU
// state out of reach. For set-up, before the vCPU first runs.
[[nodiscard]] SysResult<bool> probe_mxcsr_reachable(int vcpu_fd);

// Whether `events` holds an event that KVM will inject at the next entry:
// an exception injected or pending, an interrupt or an NMI injected.
bool event_pending_injection(const kvm_vcpu_events& events);

enum class FallbackErrorKind : uint8_t {
  NoInstructionBytes,  // KVM gave none and RIP could not be read
  Decode,              // see decode
  OperandNotRam,       // mapped to something other than guest RAM (MMIO)
  PageTableNotRam,     // a paging-structure entry for `address` lies outside guest RAM
  Kvm,                 // an ioctl failed; see sys
  MxcsrUnreachable,    // stmxcsr on a host that keeps MXCSR out of reach
};

struct FallbackError {
  FallbackErrorKind kind;
  arch::x86_64::DecodeError decode{};
  SysError sys{};
  uint64_t address = 0;  // OperandNotRam / PageTableNotRam: the linear address
  std::string message() const;
};

// How one completion ended.
struct FallbackDone {
  // FallbackOp::Count when deferred or when fetching the instruction itself
  // faulted (not decoded).
  arch::x86_64::FallbackOp op;
  std::optional<uint8_t> fault;  // the exception or interrupt raised (int3: #BP; int n: n), if any
  // ldmxcsr retired without loading MXCSR because the host keeps it out of
  // reach (FallbackCpu::mxcsr_reachable); counted apart.
  bool mxcsr_not_loaded = false;
  // Nothing was done because an event was pending injection: run the vCPU
  // again; the instruction exits again after the event's delivery.
  bool deferred = false;
};

// Per-kind counts of completed (or faulted) instructions.
class FallbackCounters {
 public:
  void count(const FallbackDone& done) {
    if (done.deferred) {
      deferred_.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    if (done.op == arch::x86_64::FallbackOp::Count) {
      fetch_faults_.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    counts_[static_cast<size_t>(done.op)].fetch_add(1, std::memory_order_relaxed);
    if (done.mxcsr_not_loaded) mxcsr_not_loaded_.fetch_add(1, std::memory_order_relaxed);
  }
  uint64_t get(arch::x86_64::FallbackOp op) const {
    return counts_[static_cast<size_t>(op)].load(std::memory_order_relaxed);
  }
  uint64_t total() const;
  uint64_t mxcsr_not_loaded() const { return mxcsr_not_loaded_.load(std::memory_order_relaxed); }
  uint64_t deferred() const { return deferred_.load(std::memory_order_relaxed); }
  uint64_t fetch_faults() const { return fetch_faults_.load(std::memory_order_relaxed); }
  // "int3 12, clac 3401, ..." (kinds with a zero count left out, then the
  // ldmxcsr that could not load MXCSR, the #PF raised for fetching the
  // instruction itself and the deferred ones); empty when none.
  std::string summary() const;

 private:
  std::atomic<uint64_t> deferred_{0};
  std::atomic<uint64_t> fetch_faults_{0};
  std::atomic<uint64_t> mxcsr_not_loaded_{0};
  std::array<std::atomic<uint64_t>, static_cast<size_t>(arch::x86_64::FallbackOp::Count)> counts_{};
};

// The instruction bytes of an emulation-failure exit: those KVM put in
// kvm_run (KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES) when present.
std::span<const uint8_t> emulation_failure_bytes(const kvm_run& run);

// Completes the instruction at the vCPU's RIP. `bytes` are the instruction
// bytes from KVM; when empty, they are fetched from guest memory at CS:RIP.
[[nodiscard]] std::expected<FallbackDone, FallbackError> complete_failed_instruction(
    std::span<const uint8_t> bytes, FallbackCpu& cpu, const devices::GuestMemory& memory);

}  // namespace tern::vmm

// Decoding of the few x86 instructions that tern completes itself when KVM's
// instruction emulator cannot (KVM_EXIT_INTERNAL_ERROR, suberror EMULATION;
// see vmm/emulation_fallback.h). This is not a general decoder: it accepts
// exactly the instructions of the fallback table, with their full legacy
// prefix / REX / ModRM / SIB / displacement syntax (Intel SDM vol. 2A,
// chapter 2), and answers NotInTable for everything else.
//
// Pure functions over bytes; no KVM, no guest memory.
#pragma once

#include <cstdint>
#include <expected>
#include <optional>
#include <span>
#include <string>

namespace tern::arch::x86_64 {

// The fallback table.
enum class FallbackOp : uint8_t {
  Int3,     // cc                 breakpoint trap (#BP)
  IntN,     // cd ib              software interrupt (a 32-bit process's system call: int $0x80)
  Clac,     // 0f 01 ca           clear RFLAGS.AC (SMAP)
  Stac,     // 0f 01 cb           set RFLAGS.AC (SMAP)
  Fwait,    // 9b                 wait for x87 (no pending x87 state under KVM)
  Ldmxcsr,  // 0f ae /2 m32       load MXCSR
  Stmxcsr,  // 0f ae /3 m32       store MXCSR
  Lsl,      // 0f 03 /r (register form) load segment limit: Linux's CPU-number read with FSGSBASE
  Count,
};

const char* fallback_op_name(FallbackOp op);

// The operating mode the bytes were fetched in (from CS.L / CS.D).
enum class CodeMode : uint8_t { Bits16, Bits32, Bits64 };

enum class SegmentReg : uint8_t { None, Es, Cs, Ss, Ds, Fs, Gs };

// A decoded memory operand: linear = segment base + base + index * scale + disp,
// truncated to the address size. Register numbers are 0..15 in the
// kvm_regs order used by x86 encodings (rax, rcx, rdx, rbx, rsp, rbp, rsi,
// rdi, r8..r15); -1 for none.
struct MemOperand {
  int base = -1;
  int index = -1;
  uint8_t scale = 1;
  int64_t disp = 0;
  bool rip_relative = false;  // disp is relative to the next instruction's RIP
  uint8_t address_bits = 64;  // 16 is never produced (refused as Unsupported)
  SegmentReg segment = SegmentReg::None;  // an override prefix, if any
};

struct DecodedInsn {
  FallbackOp op;
  uint8_t length = 0;  // bytes, prefixes included
  std::optional<MemOperand> mem;
  bool lock = false;  // an F0 prefix (#UD for every entry of the table)
  uint8_t vector = 0; // IntN: the immediate
  // Lsl: destination (ModRM.reg) and source (ModRM.rm) registers in
  // encoding order, and the operand size (16, 32 or 64 bits) for the mode.
  int reg = -1;
  int rm = -1;
  uint8_t operand_bits = 32;
};

enum class DecodeError : uint8_t {
  Truncated,    // the bytes end before the instruction does
  TooLong,      // more than 15 bytes (#GP on hardware)
  NotInTable,   // a valid instruction tern does not complete
  Unsupported,  // in the table, but in a form tern does not complete (16-bit addressing)
  InvalidForm,  // an encoding that raises #UD (a register operand for ldmxcsr)
};

std::string decode_error_text(DecodeError e);

[[nodiscard]] std::expected<DecodedInsn, DecodeError> decode_fallback_insn(std::span<const uint8_t> bytes,
                                                                          CodeMode mode);

// The effective address of `m` (before the segment base), truncated to its
// address size. `gprs` in encoding order (see MemOperand); `next_rip` is the
// address of the following instruction (for RIP-relative operands).
uint64_t effective_address(const MemOperand& m, std::span<const uint64_t, 16> gprs, uint64_t next_rip);

}  // namespace tern::arch::x86_64

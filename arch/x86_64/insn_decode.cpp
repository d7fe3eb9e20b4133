#include "arch/x86_64/insn_decode.h"

namespace tern::arch::x86_64 {

namespace {

constexpr size_t kMaxInsnLength = 15;  // SDM vol. 2A, 2.3.11

// A cursor over the instruction bytes that refuses to run past their end or
// past the architectural length limit.
class ByteCursor {
 public:
  explicit ByteCursor(std::span<const uint8_t> bytes) : bytes_(bytes) {}
  std::expected<uint8_t, DecodeError> next() {
    if (pos_ >= kMaxInsnLength) return std::unexpected(DecodeError::TooLong);
    if (pos_ >= bytes_.size()) return std::unexpected(DecodeError::Truncated);
    return bytes_[pos_++];
  }
  std::expected<int64_t, DecodeError> signed_le(size_t n) {
    uint64_t v = 0;
    for (size_t i = 0; i < n; ++i) {
      auto b = next();
      if (!b) return std::unexpected(b.error());
      v |= static_cast<uint64_t>(*b) << (8 * i);
    }
    const unsigned shift = static_cast<unsigned>(64 - 8 * n);
    return static_cast<int64_t>(v << shift) >> shift;  // sign-extend
  }
  size_t pos() const { return pos_; }

 private:
  std::span<const uint8_t> bytes_;
  size_t pos_ = 0;
};

struct Prefixes {
  bool lock = false;
  bool rep = false;      // F3
  bool repne = false;    // F2
  bool opsize = false;   // 66
  bool addrsize = false; // 67
  SegmentReg segment = SegmentReg::None;
  uint8_t rex = 0;       // 0x40..0x4f, 64-bit mode only; 0 when absent
};

std::optional<SegmentReg> segment_prefix(uint8_t b) {
  switch (b) {
    case 0x26: return SegmentReg::Es;
    case 0x2e: return SegmentReg::Cs;
    case 0x36: return SegmentReg::Ss;
    case 0x3e: return SegmentReg::Ds;
    case 0x64: return SegmentReg::Fs;
    case 0x65: return SegmentReg::Gs;
    default: return std::nullopt;
  }
}

// Reads legacy prefixes and REX; returns the first opcode byte.
std::expected<uint8_t, DecodeError> read_prefixes(ByteCursor& c, CodeMode mode, Prefixes& p) {
  for (;;) {
    auto b = c.next();
    if (!b) return b;
    if (auto seg = segment_prefix(*b)) {
      p.segment = *seg;
      p.rex = 0;  // a REX not immediately before the opcode is ignored (SDM 2.2.1)
      continue;
    }
    switch (*b) {
      case 0xf0: p.lock = true; p.rex = 0; continue;
      case 0xf2: p.repne = true; p.rep = false; p.rex = 0; continue;
      case 0xf3: p.rep = true; p.repne = false; p.rex = 0; continue;
      case 0x66: p.opsize = true; p.rex = 0; continue;
      case 0x67: p.addrsize = true; p.rex = 0; continue;
      default: break;
    }
    if (mode == CodeMode::Bits64 && (*b & 0xf0) == 0x40) {
      p.rex = *b;
      continue;
    }
    return *b;
  }
}

// ModRM (+ SIB + displacement) for a memory operand, 32- or 64-bit
// addressing (SDM vol. 2A, tables 2-2 and 2-3; 2.2.1.6 for RIP-relative).
std::expected<MemOperand, DecodeError> read_memory_operand(ByteCursor& c, uint8_t modrm, CodeMode mode,
                                                           const Prefixes& p) {
  MemOperand m;
  m.segment = p.segment;
  switch (mode) {
    case CodeMode::Bits64: m.address_bits = p.addrsize ? 32 : 64; break;
    case CodeMode::Bits32: m.address_bits = p.addrsize ? 16 : 32; break;
    case CodeMode::Bits16: m.address_bits = p.addrsize ? 32 : 16; break;
  }
  if (m.address_bits == 16) return std::unexpected(DecodeError::Unsupported);
  const uint8_t mod = modrm >> 6, rm = modrm & 7;
  const int rex_b = (p.rex & 1) ? 8 : 0, rex_x = (p.rex & 2) ? 8 : 0;
  bool disp32_only = false;
  if (rm == 4) {
    auto sib = c.next();
    if (!sib) return std::unexpected(sib.error());
    const uint8_t scale = *sib >> 6, index = (*sib >> 3) & 7, base = *sib & 7;
    m.scale = static_cast<uint8_t>(1u << scale);
    int idx = index | rex_x;
    m.index = idx == 4 ? -1 : idx;  // index 100b without REX.X: no index
    if (base == 5 && mod == 0) {
      disp32_only = true;  // [index*scale + disp32], no base
    } else {
      m.base = base | rex_b;
    }
  } else if (rm == 5 && mod == 0) {
    disp32_only = true;
    m.rip_relative = mode == CodeMode::Bits64;
  } else {
    m.base = rm | rex_b;
  }
  if (mod == 1) {
    auto d = c.signed_le(1);
    if (!d) return std::unexpected(d.error());
    m.disp = *d;
  } else if (mod == 2 || disp32_only) {
    auto d = c.signed_le(4);
    if (!d) return std::unexpected(d.error());
    m.disp = *d;
  }
  return m;
}

}  // namespace

const char* fallback_op_name(FallbackOp op) {
  switch (op) {
    case FallbackOp::Int3: return "int3";
    case FallbackOp::IntN: return "int n";
    case FallbackOp::Clac: return "clac";
    case FallbackOp::Stac: return "stac";
    case FallbackOp::Fwait: return "fwait";
    case FallbackOp::Ldmxcsr: return "ldmxcsr";
    case FallbackOp::Stmxcsr: return "stmxcsr";
    case FallbackOp::Lsl: return "lsl";
    case FallbackOp::Count: break;
  }
  return "?";
}

std::string decode_error_text(DecodeError e) {
  switch (e) {
    case DecodeError::Truncated: return "instruction bytes end early";
    case DecodeError::TooLong: return "instruction longer than 15 bytes";
    case DecodeError::NotInTable: return "not an instruction tern completes";
    case DecodeError::Unsupported: return "a form tern does not complete (16-bit addressing, lsl from memory)";
    case DecodeError::InvalidForm: return "invalid encoding (#UD)";
  }
  return "?";
}

std::expected<DecodedInsn, DecodeError> decode_fallback_insn(std::span<const uint8_t> bytes, CodeMode mode) {
  ByteCursor c(bytes);
  Prefixes p;
  auto op = read_prefixes(c, mode, p);
  if (!op) return std::unexpected(op.error());
  auto done = [&](FallbackOp which, std::optional<MemOperand> mem = std::nullopt) {
    return DecodedInsn{which, static_cast<uint8_t>(c.pos()), mem, p.lock};
  };
  switch (*op) {
    case 0xcc: return done(FallbackOp::Int3);
    case 0xcd: {
      auto imm = c.next();
      if (!imm) return std::unexpected(imm.error());
      DecodedInsn d = done(FallbackOp::IntN);
      d.vector = *imm;
      return d;
    }
    case 0x9b: return done(FallbackOp::Fwait);
    case 0x0f: break;
    default: return std::unexpected(DecodeError::NotInTable);
  }
  auto op2 = c.next();
  if (!op2) return std::unexpected(op2.error());
  auto modrm = c.next();
  if (!modrm) return std::unexpected(modrm.error());
  const bool no_simd_prefix = !p.opsize && !p.rep && !p.repne;  // "NP" in the SDM's opcode column
  const uint8_t mod = *modrm >> 6, reg = (*modrm >> 3) & 7;
  if (*op2 == 0x01) {
    // 0f 01 ca / cb: clac / stac (NP; any of 66/F2/F3 is #UD).
    if (*modrm != 0xca && *modrm != 0xcb) return std::unexpected(DecodeError::NotInTable);
    if (!no_simd_prefix) return std::unexpected(DecodeError::InvalidForm);
    return done(*modrm == 0xca ? FallbackOp::Clac : FallbackOp::Stac);
  }
  if (*op2 == 0x03) {
    // lsl r, r/m16: only the register form is completed.
    if (p.rep || p.repne) return std::unexpected(DecodeError::NotInTable);
    if (mod != 3) return std::unexpected(DecodeError::Unsupported);
    DecodedInsn d = done(FallbackOp::Lsl);
    d.reg = reg | ((p.rex & 4) ? 8 : 0);
    d.rm = (*modrm & 7) | ((p.rex & 1) ? 8 : 0);
    // Operand size (SDM vol. 2A, 2.2.1.2 and LSL): REX.W makes it 64 bits in
    // 64-bit mode; otherwise 0x66 flips the code segment's default (CS.D: 32
    // bits, or 16 in 16-bit code; 64-bit code defaults to 32).
    const bool default16 = mode == CodeMode::Bits16;
    d.operand_bits = (p.rex & 8) ? 64 : (p.opsize != default16 ? 16 : 32);
    return d;
  }
  if (*op2 == 0xae && (reg == 2 || reg == 3)) {
    // NP 0f ae /2 ldmxcsr m32, NP 0f ae /3 stmxcsr m32. With F3 and a
    // register operand these are wrfsbase/wrgsbase: other instructions.
    if (!no_simd_prefix) return std::unexpected(DecodeError::NotInTable);
    if (mod == 3) return std::unexpected(DecodeError::InvalidForm);
    auto mem = read_memory_operand(c, *modrm, mode, p);
    if (!mem) return std::unexpected(mem.error());
    return done(reg == 2 ? FallbackOp::Ldmxcsr : FallbackOp::Stmxcsr, *mem);
  }
  return std::unexpected(DecodeError::NotInTable);
}

uint64_t effective_address(const MemOperand& m, std::span<const uint64_t, 16> gprs, uint64_t next_rip) {
  uint64_t ea = static_cast<uint64_t>(m.disp);
  if (m.rip_relative) ea += next_rip;
  if (m.base >= 0) ea += gprs[static_cast<size_t>(m.base)];
  if (m.index >= 0) ea += gprs[static_cast<size_t>(m.index)] * m.scale;
  if (m.address_bits == 32) ea &= 0xffffffffull;
  return ea;
}

}  // namespace tern::arch::x86_64

// The fallback table's decoder: every entry with its prefixes, REX and
// ModRM/SIB/displacement forms, and everything else refused.
#include "arch/x86_64/insn_decode.h"

#include <gtest/gtest.h>

#include <array>
#include <vector>

namespace ax = tern::arch::x86_64;

namespace {

std::expected<ax::DecodedInsn, ax::DecodeError> dec(std::vector<uint8_t> b,
                                                     ax::CodeMode mode = ax::CodeMode::Bits64) {
  return ax::decode_fallback_insn(b, mode);
}

TEST(InsnDecode, NoOperandEntries) {
  auto i = dec({0xcc});
  ASSERT_TRUE(i);
  EXPECT_EQ(i->op, ax::FallbackOp::Int3);
  EXPECT_EQ(i->length, 1);
  EXPECT_FALSE(i->mem);

  i = dec({0xcd, 0x80});
  ASSERT_TRUE(i);
  EXPECT_EQ(i->op, ax::FallbackOp::IntN);
  EXPECT_EQ(i->vector, 0x80);
  EXPECT_EQ(i->length, 2);
  EXPECT_EQ(dec({0xcd}).error(), ax::DecodeError::Truncated);

  i = dec({0x48, 0x0f, 0x03, 0xc0});  // lsl %rax,%rax
  ASSERT_TRUE(i);
  EXPECT_EQ(i->op, ax::FallbackOp::Lsl);
  EXPECT_EQ(i->reg, 0);
  EXPECT_EQ(i->rm, 0);
  EXPECT_EQ(i->operand_bits, 64);
  EXPECT_EQ(i->length, 4);
  i = dec({0x45, 0x0f, 0x03, 0xc8});  // lsl %r8d,%r9d
  ASSERT_TRUE(i);
  EXPECT_EQ(i->reg, 9);
  EXPECT_EQ(i->rm, 8);
  EXPECT_EQ(i->operand_bits, 32);
  EXPECT_EQ(dec({0x0f, 0x03, 0x08}).error(), ax::DecodeError::Unsupported);

  i = dec({0x9b, 0xdb, 0xe3});  // fwait; fninit: only the fwait is taken
  ASSERT_TRUE(i);
  EXPECT_EQ(i->op, ax::FallbackOp::Fwait);
  EXPECT_EQ(i->length, 1);

  i = dec({0x0f, 0x01, 0xca});
  ASSERT_TRUE(i);
  EXPECT_EQ(i->op, ax::FallbackOp::Clac);
  EXPECT_EQ(i->length, 3);
  i = dec({0x0f, 0x01, 0xcb});
  ASSERT_TRUE(i);
  EXPECT_EQ(i->op, ax::FallbackOp::Stac);
  EXPECT_EQ(i->length, 3);
}

// LSL's operand size: CS.D's default (16 or 32 bits), the other one with
// 0x66, and 64 bits with REX.W in 64-bit mode (SDM vol. 2A, 2.2.1 and LSL).
TEST(InsnDecode, LslOperandSizeByMode) {
  struct Case {
    std::vector<uint8_t> bytes;
    ax::CodeMode mode;
    uint8_t bits;
  };
  for (const Case& c : {Case{{0x0f, 0x03, 0xd1}, ax::CodeMode::Bits16, 16},
                        Case{{0x66, 0x0f, 0x03, 0xd1}, ax::CodeMode::Bits16, 32},
                        Case{{0x0f, 0x03, 0xd1}, ax::CodeMode::Bits32, 32},
                        Case{{0x66, 0x0f, 0x03, 0xd1}, ax::CodeMode::Bits32, 16},
                        Case{{0x0f, 0x03, 0xd1}, ax::CodeMode::Bits64, 32},
                        Case{{0x66, 0x0f, 0x03, 0xd1}, ax::CodeMode::Bits64, 16},
                        Case{{0x66, 0x48, 0x0f, 0x03, 0xd1}, ax::CodeMode::Bits64, 64}}) {
    auto i = dec(c.bytes, c.mode);
    ASSERT_TRUE(i);
    EXPECT_EQ(i->operand_bits, c.bits) << "mode " << int(c.mode) << " length " << c.bytes.size();
  }
}

TEST(InsnDecode, LdmxcsrFromKernelFpuBegin) {
  // ldmxcsr 4(%rsp), as Debian's 6.1 kernel_fpu_begin has it.
  auto i = dec({0x0f, 0xae, 0x54, 0x24, 0x04});
  ASSERT_TRUE(i);
  EXPECT_EQ(i->op, ax::FallbackOp::Ldmxcsr);
  EXPECT_EQ(i->length, 5);
  ASSERT_TRUE(i->mem);
  EXPECT_EQ(i->mem->base, 4);  // rsp
  EXPECT_EQ(i->mem->index, -1);
  EXPECT_EQ(i->mem->disp, 4);
  EXPECT_FALSE(i->mem->rip_relative);
}

TEST(InsnDecode, MemoryOperandForms) {
  // stmxcsr (%rax)
  auto i = dec({0x0f, 0xae, 0x18});
  ASSERT_TRUE(i);
  EXPECT_EQ(i->op, ax::FallbackOp::Stmxcsr);
  EXPECT_EQ(i->mem->base, 0);
  EXPECT_EQ(i->length, 3);
  // ldmxcsr -0x10(%rbp): disp8 sign-extended
  i = dec({0x0f, 0xae, 0x55, 0xf0});
  ASSERT_TRUE(i);
  EXPECT_EQ(i->mem->base, 5);
  EXPECT_EQ(i->mem->disp, -16);
  // ldmxcsr 0x12345678(%r13): REX.B, disp32
  i = dec({0x41, 0x0f, 0xae, 0x95, 0x78, 0x56, 0x34, 0x12});
  ASSERT_TRUE(i);
  EXPECT_EQ(i->mem->base, 13);
  EXPECT_EQ(i->mem->disp, 0x12345678);
  EXPECT_EQ(i->length, 8);
  // ldmxcsr 0x8(%r12,%r9,8): SIB with REX.X and REX.B
  i = dec({0x43, 0x0f, 0xae, 0x54, 0xcc, 0x08});
  ASSERT_TRUE(i);
  EXPECT_EQ(i->mem->base, 12);
  EXPECT_EQ(i->mem->index, 9);
  EXPECT_EQ(i->mem->scale, 8);
  EXPECT_EQ(i->mem->disp, 8);
  // ldmxcsr 0x100(%rip)
  i = dec({0x0f, 0xae, 0x15, 0x00, 0x01, 0x00, 0x00});
  ASSERT_TRUE(i);
  EXPECT_TRUE(i->mem->rip_relative);
  EXPECT_EQ(i->mem->base, -1);
  EXPECT_EQ(i->mem->disp, 0x100);
  // ldmxcsr 0x20(,%rcx,4): SIB without base, disp32
  i = dec({0x0f, 0xae, 0x14, 0x8d, 0x20, 0x00, 0x00, 0x00});
  ASSERT_TRUE(i);
  EXPECT_EQ(i->mem->base, -1);
  EXPECT_EQ(i->mem->index, 1);
  EXPECT_EQ(i->mem->scale, 4);
  EXPECT_EQ(i->mem->disp, 0x20);
  // %gs:0x28 with a 67 prefix: segment override, 32-bit addressing
  i = dec({0x65, 0x67, 0x0f, 0xae, 0x14, 0x25, 0x28, 0x00, 0x00, 0x00});
  ASSERT_TRUE(i);
  EXPECT_EQ(i->mem->segment, ax::SegmentReg::Gs);
  EXPECT_EQ(i->mem->address_bits, 32);
  EXPECT_EQ(i->length, 10);
}

TEST(InsnDecode, RexBeforeALegacyPrefixIsIgnored) {
  // 41 65 0f ae 10: the REX is not next to the opcode, so the base is rax.
  auto i = dec({0x41, 0x65, 0x0f, 0xae, 0x10});
  ASSERT_TRUE(i);
  EXPECT_EQ(i->mem->base, 0);
  EXPECT_EQ(i->mem->segment, ax::SegmentReg::Gs);
}

TEST(InsnDecode, ThirtyTwoBitModeHasNoRexAndAbsoluteDisp32) {
  // In 32-bit mode 0x41 is `inc %ecx`, not a REX prefix.
  EXPECT_EQ(dec({0x41, 0x0f, 0xae, 0x10}, ax::CodeMode::Bits32).error(), ax::DecodeError::NotInTable);
  auto i = dec({0x0f, 0xae, 0x15, 0x00, 0x10, 0x00, 0x00}, ax::CodeMode::Bits32);
  ASSERT_TRUE(i);
  EXPECT_FALSE(i->mem->rip_relative);
  EXPECT_EQ(i->mem->disp, 0x1000);
  EXPECT_EQ(i->mem->address_bits, 32);
  // 16-bit addressing is not completed.
  EXPECT_EQ(dec({0x0f, 0xae, 0x17}, ax::CodeMode::Bits16).error(), ax::DecodeError::Unsupported);
}

TEST(InsnDecode, RefusesWhatIsNotInTheTable) {
  EXPECT_EQ(dec({0x90}).error(), ax::DecodeError::NotInTable);                    // nop
  EXPECT_EQ(dec({0xf3, 0x48, 0x0f, 0xb8, 0xc7}).error(), ax::DecodeError::NotInTable);  // popcnt
  EXPECT_EQ(dec({0x66, 0x44, 0x0f, 0x6e, 0xf9}).error(), ax::DecodeError::NotInTable);  // movd
  EXPECT_EQ(dec({0x0f, 0x01, 0xd0}).error(), ax::DecodeError::NotInTable);        // xgetbv
  EXPECT_EQ(dec({0x0f, 0xae, 0x20}).error(), ax::DecodeError::NotInTable);        // xsave (%rax)
  EXPECT_EQ(dec({0xf3, 0x0f, 0xae, 0xd0}).error(), ax::DecodeError::NotInTable);  // wrfsbase %eax
  EXPECT_EQ(dec({0x66, 0x0f, 0xae, 0x10}).error(), ax::DecodeError::NotInTable);  // 66-prefixed: not ldmxcsr
}

TEST(InsnDecode, InvalidFormsAndLock) {
  EXPECT_EQ(dec({0x0f, 0xae, 0xd0}).error(), ax::DecodeError::InvalidForm);  // ldmxcsr with a register
  EXPECT_EQ(dec({0x66, 0x0f, 0x01, 0xca}).error(), ax::DecodeError::InvalidForm);
  auto i = dec({0xf0, 0x0f, 0x01, 0xcb});
  ASSERT_TRUE(i);
  EXPECT_TRUE(i->lock);
}

TEST(InsnDecode, TruncatedAndTooLong) {
  EXPECT_EQ(dec({}).error(), ax::DecodeError::Truncated);
  EXPECT_EQ(dec({0x0f, 0x01}).error(), ax::DecodeError::Truncated);
  EXPECT_EQ(dec({0x0f, 0xae, 0x94, 0x24, 0x00}).error(), ax::DecodeError::Truncated);  // disp32 cut short
  std::vector<uint8_t> long_insn{0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66,
                                 0x66, 0x66, 0x66, 0x66, 0x66, 0x0f, 0x01, 0xca};
  EXPECT_EQ(dec(long_insn).error(), ax::DecodeError::TooLong);
}

TEST(InsnDecode, EffectiveAddress) {
  std::array<uint64_t, 16> gprs{};
  gprs[4] = 0xffffc90000013f00;  // rsp
  gprs[9] = 3;
  gprs[12] = 0x1000;
  auto i = dec({0x0f, 0xae, 0x54, 0x24, 0x04});
  EXPECT_EQ(ax::effective_address(*i->mem, gprs, 0), 0xffffc90000013f04u);
  i = dec({0x43, 0x0f, 0xae, 0x54, 0xcc, 0x08});
  EXPECT_EQ(ax::effective_address(*i->mem, gprs, 0), 0x1000u + 3 * 8 + 8);
  i = dec({0x0f, 0xae, 0x15, 0xf0, 0xff, 0xff, 0xff});  // -0x10(%rip)
  EXPECT_EQ(ax::effective_address(*i->mem, gprs, 0xffffffff81000010), 0xffffffff81000000u);
  i = dec({0x67, 0x0f, 0xae, 0x54, 0x24, 0x04});  // 32-bit address wraps
  EXPECT_EQ(ax::effective_address(*i->mem, gprs, 0), 0x00013f04u);
}

}  // namespace

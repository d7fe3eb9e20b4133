#include "devices/pci/pci_root.h"

#include <gtest/gtest.h>

#include <array>
#include <cstring>
#include <vector>

namespace tern::devices {
namespace {

// A PCI function with one 64-bit 16 KiB BAR and a small config space whose
// command register (offset 4) is writable, as real devices keep it.
class FakeDevice final : public PciDevice {
 public:
  std::string_view name() const override { return "fake"; }
  std::vector<PciBarInfo> bars() const override {
    return {PciBarInfo{.index = 0, .size = 0x4000, .is_64bit = true},
            PciBarInfo{.index = 2, .size = 0x1000, .is_64bit = false}};
  }
  void config_read(uint32_t offset, std::span<uint8_t> data) override {
    std::memcpy(data.data(), config.data() + offset, data.size());
  }
  void config_write(uint32_t offset, std::span<const uint8_t> data) override {
    if (offset == 4) std::memcpy(config.data() + 4, data.data(), std::min<size_t>(2, data.size()));
  }
  void bar_read(uint8_t bar, uint64_t offset, std::span<uint8_t> data) override {
    last_bar = bar;
    last_offset = offset;
    std::fill(data.begin(), data.end(), 0x5a);
  }
  void bar_write(uint8_t bar, uint64_t offset, std::span<const uint8_t>) override {
    last_bar = bar;
    last_offset = offset;
  }
  void bar_placed(uint8_t bar, uint64_t gpa) override { placed.push_back({bar, gpa}); }

  std::array<uint8_t, 4096> config{0xf4, 0x1a, 0x42, 0x10};
  std::vector<std::pair<uint8_t, uint64_t>> placed;
  int last_bar = -1;
  uint64_t last_offset = ~0ull;
};

class PciRootTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto dev = std::make_unique<FakeDevice>();
    fake = dev.get();
    auto slot = root.add_device(std::move(dev));
    ASSERT_TRUE(slot.has_value());
    EXPECT_EQ(*slot, 1);
  }
  uint32_t type1_read(uint8_t slot, uint32_t reg, size_t len = 4) {
    std::array<uint8_t, 4> addr{};
    uint32_t a = 0x8000'0000u | (uint32_t{slot} << 11) | (reg & 0xfc);
    std::memcpy(addr.data(), &a, 4);
    root.type1_handler().write(0, addr);
    std::array<uint8_t, 4> out{};
    root.type1_handler().read(4 + (reg & 3), std::span<uint8_t>(out.data(), len));
    uint32_t v = 0;
    std::memcpy(&v, out.data(), len);
    return v;
  }
  void type1_write(uint8_t slot, uint32_t reg, uint32_t value, size_t len = 4) {
    std::array<uint8_t, 4> addr{};
    uint32_t a = 0x8000'0000u | (uint32_t{slot} << 11) | (reg & 0xfc);
    std::memcpy(addr.data(), &a, 4);
    root.type1_handler().write(0, addr);
    std::array<uint8_t, 4> in{};
    std::memcpy(in.data(), &value, 4);
    root.type1_handler().write(4 + (reg & 3), std::span<const uint8_t>(in.data(), len));
  }
  uint32_t ecam_read(uint8_t slot, uint32_t reg) {
    std::array<uint8_t, 4> out{};
    root.ecam_handler().read((uint64_t{slot} << 15) | reg, out);
    uint32_t v;
    std::memcpy(&v, out.data(), 4);
    return v;
  }

  PciRoot root;
  FakeDevice* fake = nullptr;
};

TEST_F(PciRootTest, HostBridgeAndDeviceVisibleThroughBothMechanisms) {
  EXPECT_EQ(type1_read(0, 0), 0x0d578086u);
  EXPECT_EQ(type1_read(0, 8) >> 8, 0x060000u);
  EXPECT_EQ(type1_read(1, 0), 0x10421af4u);
  for (uint32_t reg = 0; reg < 0x40; reg += 4) {
    EXPECT_EQ(type1_read(1, reg), ecam_read(1, reg)) << "register " << reg;
  }
  EXPECT_EQ(type1_read(1, 2, 2), 0x1042u);  // word access at a non-zero offset
}

TEST_F(PciRootTest, AbsentFunctionsReadAllOnes) {
  EXPECT_EQ(type1_read(2, 0), 0xffffffffu);
  EXPECT_EQ(ecam_read(31, 0), 0xffffffffu);
  std::array<uint8_t, 4> out{};
  root.ecam_handler().read((1u << 15) | (1u << 12), out);  // function 1 of slot 1
  EXPECT_EQ(out, (std::array<uint8_t, 4>{0xff, 0xff, 0xff, 0xff}));
}

TEST_F(PciRootTest, BarsArePlacedNaturallyAlignedInTheWindow) {
  ASSERT_EQ(fake->placed.size(), 2u);
  EXPECT_EQ(fake->placed[0], (std::pair<uint8_t, uint64_t>{0, 0xC000'0000}));
  EXPECT_EQ(fake->placed[1], (std::pair<uint8_t, uint64_t>{2, 0xC000'4000}));
  EXPECT_EQ(type1_read(1, 0x10), 0xC000'0004u);  // 64-bit memory BAR
  EXPECT_EQ(type1_read(1, 0x14), 0u);
  EXPECT_EQ(type1_read(1, 0x18), 0xC000'4000u);  // 32-bit memory BAR
  EXPECT_EQ(type1_read(1, 0x1c), 0u);            // unimplemented
}

TEST_F(PciRootTest, BarSizingReadsBackTheSizeMask) {
  type1_write(1, 0x10, 0xffffffff);
  type1_write(1, 0x14, 0xffffffff);
  EXPECT_EQ(type1_read(1, 0x10), 0xFFFF'C004u);
  EXPECT_EQ(type1_read(1, 0x14), 0xFFFF'FFFFu);
  type1_write(1, 0x18, 0xffffffff);
  EXPECT_EQ(type1_read(1, 0x18), 0xFFFF'F000u);
  type1_write(1, 0x1c, 0xffffffff);
  EXPECT_EQ(type1_read(1, 0x1c), 0u);
}

TEST_F(PciRootTest, BarAccessRoutedOnlyWhileMemoryDecodingIsOn) {
  std::array<uint8_t, 4> out{};
  root.mmio_handler().read(0x10, out);
  EXPECT_EQ(out[0], 0xff);  // decoding off: master abort
  type1_write(1, 0x04, 0x2, 2);
  root.mmio_handler().read(0x4010, out);
  EXPECT_EQ(out[0], 0x5a);
  EXPECT_EQ(fake->last_bar, 2);
  EXPECT_EQ(fake->last_offset, 0x10u);
}

TEST_F(PciRootTest, ReprogrammedBarMovesRoutingAndIsReported) {
  type1_write(1, 0x04, 0x2, 2);
  type1_write(1, 0x10, 0xC100'0000);
  ASSERT_EQ(fake->placed.back(), (std::pair<uint8_t, uint64_t>{0, 0xC100'0000}));
  std::array<uint8_t, 4> out{};
  root.mmio_handler().read(0x0, out);  // the old address no longer decodes
  EXPECT_EQ(out[0], 0xff);
  root.mmio_handler().read(0x100'0008, out);
  EXPECT_EQ(out[0], 0x5a);
  EXPECT_EQ(fake->last_bar, 0);
  EXPECT_EQ(fake->last_offset, 8u);
}

TEST_F(PciRootTest, HostBridgeIsReadOnly) {
  type1_write(0, 0x00, 0x12345678);
  EXPECT_EQ(type1_read(0, 0), 0x0d578086u);
}

TEST(PciRoot, RejectsDevicesWhenTheWindowIsFull) {
  PciRoot root(0xC000'0000, 0x8000);
  EXPECT_TRUE(root.add_device(std::make_unique<FakeDevice>()).has_value());
  auto second = root.add_device(std::make_unique<FakeDevice>());
  ASSERT_FALSE(second.has_value());
  EXPECT_EQ(second.error(), PciError::WindowFull);
}

}  // namespace
}  // namespace tern::devices

#include "arch/x86_64/acpi.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

namespace tern::arch::x86_64 {
namespace {

constexpr uint64_t kAreaGpa = 0xE0000;

uint64_t le(const uint8_t* p, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v |= uint64_t{p[i]} << (8 * i);
  return v;
}

uint8_t sum(const uint8_t* p, size_t len) {
  uint8_t s = 0;
  for (size_t i = 0; i < len; ++i) s = static_cast<uint8_t>(s + p[i]);
  return s;
}

// Walks RSDP -> XSDT -> FADT -> DSDT like a kernel does, checking every
// checksum, and returns the tables by signature.
std::map<std::string, std::vector<uint8_t>> walk(const std::vector<uint8_t>& area, uint64_t rsdp) {
  std::map<std::string, std::vector<uint8_t>> tables;
  auto at = [&](uint64_t gpa) {
    EXPECT_GE(gpa, kAreaGpa);
    EXPECT_LT(gpa - kAreaGpa, area.size());
    return area.data() + (gpa - kAreaGpa);
  };
  const uint8_t* r = at(rsdp);
  EXPECT_EQ(std::memcmp(r, "RSD PTR ", 8), 0);
  EXPECT_EQ(sum(r, 20), 0) << "RSDP checksum";
  EXPECT_EQ(sum(r, 36), 0) << "RSDP extended checksum";
  EXPECT_EQ(r[15], 2);
  auto take = [&](uint64_t gpa) {
    const uint8_t* t = at(gpa);
    uint32_t len = static_cast<uint32_t>(le(t + 4, 4));
    EXPECT_EQ(sum(t, len), 0) << std::string(reinterpret_cast<const char*>(t), 4) << " checksum";
    std::string sig(reinterpret_cast<const char*>(t), 4);
    tables[sig] = std::vector<uint8_t>(t, t + len);
    return sig;
  };
  take(le(r + 24, 8));
  const auto& xsdt = tables.at("XSDT");
  for (size_t off = 36; off + 8 <= xsdt.size(); off += 8) take(le(xsdt.data() + off, 8));
  take(le(tables.at("FACP").data() + 140, 8));  // X_DSDT
  return tables;
}

std::string disassemble(const std::string& dir, const std::string& sig, const std::vector<uint8_t>& t) {
  std::string dat = dir + "/" + sig + ".dat";
  std::ofstream(dat, std::ios::binary).write(reinterpret_cast<const char*>(t.data()),
                                            static_cast<std::streamsize>(t.size()));
  std::string cmd = "cd " + dir + " && iasl -d " + sig + ".dat > " + sig + ".log 2>&1";
  EXPECT_EQ(std::system(cmd.c_str()), 0) << "iasl -d failed for " << sig;
  std::ifstream dsl(dir + "/" + sig + ".dsl");
  std::stringstream ss;
  ss << dsl.rdbuf();
  return ss.str();
}

class AcpiTables : public ::testing::Test {
 protected:
  void SetUp() override {
    area.resize(0x10000);
    config.num_cpus = 4;
    auto rsdp = write_acpi_tables(area, kAreaGpa, config);
    ASSERT_TRUE(rsdp.has_value());
    EXPECT_EQ(*rsdp, kAreaGpa);
    tables = walk(area, *rsdp);
    char tmpl[] = "/tmp/tern-acpi-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir = tmpl;
  }
  void TearDown() override { if (!getenv("KEEP")) std::filesystem::remove_all(dir); }

  std::vector<uint8_t> area;
  AcpiConfig config;
  std::map<std::string, std::vector<uint8_t>> tables;
  std::string dir;
};

TEST_F(AcpiTables, XsdtListsFadtMadtMcfgAndFadtPointsAtDsdt) {
  EXPECT_EQ(tables.size(), 5u);
  for (const char* sig : {"XSDT", "FACP", "APIC", "MCFG", "DSDT"}) EXPECT_TRUE(tables.count(sig)) << sig;
}

TEST_F(AcpiTables, FadtIsHardwareReducedWithSleepAndResetRegisters) {
  std::string dsl = disassemble(dir, "FACP", tables.at("FACP"));
  EXPECT_NE(dsl.find("Hardware Reduced (V5) : 1"), std::string::npos) << dsl;
  EXPECT_NE(dsl.find("Reset Register Supported (V2) : 1"), std::string::npos);
  // Sleep control 0x600, sleep status 0x601, reset 0x602 with value 1.
  EXPECT_NE(dsl.find("Address : 0000000000000600"), std::string::npos);
  EXPECT_NE(dsl.find("Address : 0000000000000601"), std::string::npos);
  EXPECT_NE(dsl.find("Address : 0000000000000602"), std::string::npos);
  EXPECT_NE(dsl.find("Value to cause reset : 01"), std::string::npos);
}

TEST_F(AcpiTables, MadtHasEveryCpuAndTheIoapic) {
  std::string dsl = disassemble(dir, "APIC", tables.at("APIC"));
  EXPECT_NE(dsl.find("Local Apic Address : FEE00000"), std::string::npos) << dsl;
  for (int cpu = 0; cpu < 4; ++cpu) {
    char line[64];
    std::snprintf(line, sizeof line, "Local Apic ID : %02X", cpu);
    EXPECT_NE(dsl.find(line), std::string::npos) << line;
  }
  EXPECT_NE(dsl.find("Address : FEC00000"), std::string::npos);
  EXPECT_NE(dsl.find("Interrupt : 00000002"), std::string::npos);  // IRQ0 -> GSI 2
}

TEST_F(AcpiTables, McfgDescribesEcamForBusZero) {
  std::string dsl = disassemble(dir, "MCFG", tables.at("MCFG"));
  EXPECT_NE(dsl.find("Base Address : 00000000E0000000"), std::string::npos) << dsl;
  EXPECT_NE(dsl.find("End Bus Number : 00"), std::string::npos);
}

TEST_F(AcpiTables, DsdtDescribesPciRootCom1AndS5) {
  std::string dsl = disassemble(dir, "DSDT", tables.at("DSDT"));
  std::ifstream log(dir + "/DSDT.log");
  std::stringstream ls;
  ls << log.rdbuf();
  EXPECT_EQ(ls.str().find("Error"), std::string::npos) << ls.str();
  EXPECT_NE(dsl.find("Device (PCI0)"), std::string::npos) << dsl;
  EXPECT_NE(dsl.find("EisaId (\"PNP0A08\")"), std::string::npos);
  EXPECT_NE(dsl.find("EisaId (\"PNP0A03\")"), std::string::npos);
  EXPECT_NE(dsl.find("0xC0000000,         // Range Minimum"), std::string::npos);
  EXPECT_NE(dsl.find("0xDFFFFFFF,         // Range Maximum"), std::string::npos);
  EXPECT_NE(dsl.find("0x0CF8,             // Range Minimum"), std::string::npos);
  EXPECT_NE(dsl.find("Device (COM1)"), std::string::npos);
  EXPECT_NE(dsl.find("0x03F8,             // Range Minimum"), std::string::npos);
  EXPECT_NE(dsl.find("IRQNoFlags ()\n                    {4}"), std::string::npos);
  EXPECT_NE(dsl.find("Name (\\_S5, Package (0x02)"), std::string::npos);
  EXPECT_NE(dsl.find("0xE0000000,         // Address Base"), std::string::npos);
}

TEST(Acpi, RejectsTooSmallAreaAndBadCpuCounts) {
  std::vector<uint8_t> small(128);
  AcpiConfig config;
  EXPECT_EQ(write_acpi_tables(small, kAreaGpa, config).error(), AcpiError::AreaTooSmall);
  std::vector<uint8_t> area(0x10000);
  config.num_cpus = 0;
  EXPECT_EQ(write_acpi_tables(area, kAreaGpa, config).error(), AcpiError::TooManyCpus);
  config.num_cpus = 256;
  EXPECT_EQ(write_acpi_tables(area, kAreaGpa, config).error(), AcpiError::TooManyCpus);
}

}  // namespace
}  // namespace tern::arch::x86_64

namespace tern::arch::x86_64 {
namespace {

TEST(AcpiVirtioMmio, EachDeviceIsLnro0005WithItsWindowAndInterrupt) {
  std::vector<uint8_t> area(0x10000);
  AcpiConfig config;
  config.virtio_mmio = {{.base = 0xe0100000, .size = 0x1000, .gsi = 5}, {.base = 0xe0101000, .size = 0x1000, .gsi = 16}};
  auto rsdp = write_acpi_tables(area, kAreaGpa, config);
  ASSERT_TRUE(rsdp.has_value());
  auto tables = walk(area, *rsdp);
  char tmpl[] = "/tmp/tern-acpi-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  std::string dsl = disassemble(tmpl, "DSDT", tables.at("DSDT"));
  std::filesystem::remove_all(tmpl);
  for (const char* want : {"Device (VR00)", "Device (VR01)", "Name (_HID, \"LNRO0005\")",
                           "0xE0100000,         // Address Base", "0xE0101000,         // Address Base",
                           "0x00001000,         // Address Length",
                           "Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, )",
                           "0x00000005,", "0x00000010,"}) {
    EXPECT_NE(dsl.find(want), std::string::npos) << want << "\n" << dsl;
  }
}

}  // namespace
}  // namespace tern::arch::x86_64

namespace tern::arch::x86_64 {
namespace {

// The power button of a hardware-reduced machine: a Generic Event Device
// (ACPI0013) whose one edge interrupt runs _EVT, which notifies the
// control-method power button (PNP0C0C); Linux's evged and button drivers
// bind them and report KEY_POWER (docs/vmm.md, "Power button").
TEST(AcpiPowerButton, GedInterruptNotifiesThePnp0c0cButton) {
  std::vector<uint8_t> area(0x10000);
  AcpiConfig config;
  config.power_button_gsi = 12;
  auto rsdp = write_acpi_tables(area, kAreaGpa, config);
  ASSERT_TRUE(rsdp.has_value());
  auto tables = walk(area, *rsdp);
  char tmpl[] = "/tmp/tern-acpi-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  std::string dsl = disassemble(tmpl, "DSDT", tables.at("DSDT"));
  std::ifstream log(std::string(tmpl) + "/DSDT.log");
  std::stringstream ls;
  ls << log.rdbuf();
  std::filesystem::remove_all(tmpl);
  EXPECT_EQ(ls.str().find("Error"), std::string::npos) << ls.str();
  EXPECT_EQ(ls.str().find("Warning"), std::string::npos) << ls.str();
  for (const char* want : {"Device (PWRB)", "EisaId (\"PNP0C0C\")", "Device (GED0)", "Name (_HID, \"ACPI0013\"",
                           "Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, )", "0x0000000C,",
                           "Method (_EVT, 1, NotSerialized)", "Notify (\\_SB.PWRB, 0x80)"}) {
    EXPECT_NE(dsl.find(want), std::string::npos) << want << "\n" << dsl;
  }
}

TEST(AcpiPowerButton, AbsentWithoutAnInterrupt) {
  std::vector<uint8_t> area(0x10000);
  AcpiConfig config;
  auto rsdp = write_acpi_tables(area, kAreaGpa, config);
  ASSERT_TRUE(rsdp.has_value());
  auto tables = walk(area, *rsdp);
  const auto& dsdt = tables.at("DSDT");
  std::string text(dsdt.begin(), dsdt.end());
  EXPECT_EQ(text.find("PWRB"), std::string::npos);
  EXPECT_EQ(text.find("ACPI0013"), std::string::npos);
}

}  // namespace
}  // namespace tern::arch::x86_64

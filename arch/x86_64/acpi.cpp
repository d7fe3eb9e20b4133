#include "arch/x86_64/acpi.h"

#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "arch/x86_64/aml.h"

namespace tern::arch::x86_64 {
namespace {

using Bytes = std::vector<uint8_t>;

constexpr char kOemId[] = "TERN  ";       // 6 bytes
constexpr char kOemTableId[] = "TERNVMM ";  // 8 bytes
constexpr char kCreatorId[] = "TERN";

void put(Bytes& t, size_t at, uint64_t value, int bytes) {
  for (int i = 0; i < bytes; ++i) t[at + i] = static_cast<uint8_t>(value >> (8 * i));
}

void put_chars(Bytes& t, size_t at, std::string_view s) { std::memcpy(t.data() + at, s.data(), s.size()); }

uint8_t checksum(const uint8_t* data, size_t len) {
  uint8_t sum = 0;
  for (size_t i = 0; i < len; ++i) sum = static_cast<uint8_t>(sum + data[i]);
  return static_cast<uint8_t>(-sum);
}

// The 36-byte System Description Table header (ACPI 6.5, 5.2.6). The
// checksum is filled in by finish().
Bytes table(std::string_view signature, uint8_t revision, size_t length) {
  Bytes t(length, 0);
  put_chars(t, 0, signature);
  put(t, 4, length, 4);
  t[8] = revision;
  put_chars(t, 10, kOemId);
  put_chars(t, 16, kOemTableId);
  put(t, 24, 1, 4);  // OEM revision
  put_chars(t, 28, kCreatorId);
  put(t, 32, 1, 4);  // creator revision
  return t;
}

void finish(Bytes& t) {
  put(t, 4, t.size(), 4);
  t[9] = 0;
  t[9] = checksum(t.data(), t.size());
}

// Generic Address Structure (5.2.3.2) for an 8-bit I/O port.
void put_io_gas(Bytes& t, size_t at, uint16_t port) {
  t[at] = 1;      // system I/O space
  t[at + 1] = 8;  // register bit width
  t[at + 2] = 0;  // bit offset
  t[at + 3] = 1;  // byte access
  put(t, at + 4, port, 8);
}

Bytes make_fadt(const AcpiConfig& c, uint64_t dsdt_gpa) {
  // FADT revision 6 (5.2.9), 276 bytes.
  Bytes t = table("FACP", 6, 276);
  constexpr uint32_t kWbinvd = 1u << 0, kPwrButton = 1u << 4, kSlpButton = 1u << 5,
                     kResetRegSup = 1u << 10, kHwReducedAcpi = 1u << 20;
  put(t, 40, dsdt_gpa < (1ull << 32) ? dsdt_gpa : 0, 4);  // DSDT
  // IA-PC boot architecture flags: no VGA (bit 2), no CMOS RTC (bit 5).
  put(t, 109, (1u << 2) | (1u << 5), 2);
  put(t, 112, kWbinvd | kPwrButton | kSlpButton | kResetRegSup | kHwReducedAcpi, 4);
  put_io_gas(t, 116, c.reset_port);
  t[128] = c.reset_value;
  t[131] = 5;  // FADT minor version: ACPI 6.5
  put(t, 140, dsdt_gpa, 8);  // X_DSDT
  put_io_gas(t, 244, c.sleep_control_port);
  put_io_gas(t, 256, c.sleep_status_port);
  put_chars(t, 268, "TERNVMM\0");  // hypervisor vendor identity
  finish(t);
  return t;
}

Bytes make_madt(const AcpiConfig& c) {
  Bytes t = table("APIC", 5, 44);
  put(t, 36, c.lapic_address, 4);
  put(t, 40, 0, 4);  // no dual 8259 set-up to take over
  auto add = [&t](std::initializer_list<uint8_t> bytes) { t.insert(t.end(), bytes); };
  for (uint32_t cpu = 0; cpu < c.num_cpus; ++cpu) {
    // Processor Local APIC (5.2.12.2): UID, APIC id, enabled.
    add({0, 8, static_cast<uint8_t>(cpu), static_cast<uint8_t>(cpu), 1, 0, 0, 0});
  }
  // I/O APIC (5.2.12.3): id, reserved, address, GSI base 0.
  uint8_t ioapic_id = 0;
  add({1, 12, ioapic_id, 0});
  for (int i = 0; i < 4; ++i) t.push_back(static_cast<uint8_t>(c.ioapic_address >> (8 * i)));
  add({0, 0, 0, 0});
  // Interrupt Source Override (5.2.12.5): ISA IRQ 0 (the PIT) is GSI 2.
  add({2, 10, 0, 0, 2, 0, 0, 0, 0, 0});
  // Local APIC NMI (5.2.12.7): all processors, LINT1.
  add({4, 6, 0xff, 0, 0, 1});
  finish(t);
  return t;
}

Bytes make_mcfg(const AcpiConfig& c) {
  // PCI Firmware Spec 3.2, 4.1.2: header, 8 reserved bytes, one allocation.
  Bytes t = table("MCFG", 1, 60);
  put(t, 44, c.ecam_base, 8);
  put(t, 52, 0, 2);  // segment
  t[54] = 0;         // start bus
  t[55] = c.ecam_last_bus;
  finish(t);
  return t;
}

Bytes make_dsdt(const AcpiConfig& c) {
  using namespace aml;
  uint32_t window_end = c.mmio_window_base + c.mmio_window_size - 1;
  Bytes pci0 = device("PCI0", {
      name("_HID", eisa_id("PNP0A08")),
      name("_CID", eisa_id("PNP0A03")),
      name("_SEG", integer(0)),
      name("_BBN", integer(0)),
      name("_UID", integer(0)),
      name("_CRS", resource_template({
          word_bus_number(0, c.ecam_last_bus),
          io_port(0xcf8, 8),
          word_io(0x0000, 0x0cf7),
          word_io(0x0d00, 0xffff),
          dword_memory(c.mmio_window_base, window_end),
      })),
  });
  // ECAM must be reserved by a motherboard resource for Linux to use it.
  Bytes resources = device("MRES", {
      name("_HID", eisa_id("PNP0C02")),
      name("_UID", integer(0)),
      name("_CRS", resource_template({
          memory32_fixed(static_cast<uint32_t>(c.ecam_base),
                         (uint32_t{c.ecam_last_bus} + 1) << 20),
      })),
  });
  Bytes com1 = device("COM1", {
      name("_HID", eisa_id("PNP0501")),
      name("_UID", integer(1)),
      name("_CRS", resource_template({io_port(c.com1_port, 8), irq(c.com1_irq)})),
  });
  std::vector<Bytes> sb = {pci0, resources, com1};
  for (size_t i = 0; i < c.virtio_mmio.size(); ++i) {
    const VirtioMmioAcpi& m = c.virtio_mmio[i];
    static constexpr char kHex[] = "0123456789ABCDEF";
    std::string dev_name = {'V', 'R', kHex[(i >> 4) & 15], kHex[i & 15]};
    sb.push_back(device(dev_name, {
        name("_HID", string("LNRO0005")),
        name("_UID", integer(i)),
        name("_CRS", resource_template({memory32_fixed(m.base, m.size), interrupt(m.gsi)})),
    }));
  }
  if (c.power_button_gsi) {
    // A hardware-reduced machine has no fixed power-button event (ACPI 6.5,
    // 4.1): the button is a control-method device (the FADT's PWR_BUTTON
    // flag), signalled through a Generic Event Device (5.6.9). Linux's
    // evged driver runs _EVT on each edge of the GED's interrupt; with one
    // event source, _EVT needs no status register to tell events apart, so
    // the guest has no register to read or write. Notify 0x80 on a
    // PNP0C0C device is "button pressed" (4.8.3.1.1); Linux's button driver
    // reports it as KEY_POWER.
    sb.push_back(device("PWRB", {
        name("_HID", eisa_id("PNP0C0C")),
        name("_UID", integer(0)),
    }));
    sb.push_back(device("GED0", {
        name("_HID", string("ACPI0013")),
        name("_UID", integer(0)),
        name("_CRS", resource_template({interrupt(*c.power_button_gsi)})),
        method("_EVT", 1, {notify("\\_SB_.PWRB", 0x80)}),
    }));
  }
  Bytes aml_body = join({
      scope("\\_SB_", sb),
      // \_S5: SLP_TYPa, SLP_TYPb for power-off (7.4.2).
      name("\\_S5_", package({integer(c.s5_sleep_type), integer(c.s5_sleep_type)})),
  });
  Bytes t = table("DSDT", 2, 36);
  t.insert(t.end(), aml_body.begin(), aml_body.end());
  finish(t);
  return t;
}

Bytes make_xsdt(const std::vector<uint64_t>& entries) {
  Bytes t = table("XSDT", 1, 36 + 8 * entries.size());
  for (size_t i = 0; i < entries.size(); ++i) put(t, 36 + 8 * i, entries[i], 8);
  finish(t);
  return t;
}

Bytes make_rsdp(uint64_t xsdt_gpa) {
  // RSDP revision 2 (5.2.5.3): 36 bytes, two checksums.
  Bytes r(36, 0);
  put_chars(r, 0, "RSD PTR ");
  put_chars(r, 9, kOemId);
  r[15] = 2;
  put(r, 20, 36, 4);
  put(r, 24, xsdt_gpa, 8);
  r[8] = checksum(r.data(), 20);
  r[32] = checksum(r.data(), 36);
  return r;
}

constexpr size_t align16(size_t v) { return (v + 15) & ~size_t{15}; }

}  // namespace

const char* acpi_error_text(AcpiError error) {
  switch (error) {
    case AcpiError::AreaTooSmall: return "ACPI tables do not fit their area";
    case AcpiError::TooManyCpus: return "too many vCPUs for the MADT (at most 255)";
    case AcpiError::AreaAbove4G: return "ACPI area must lie below 4 GiB";
  }
  return "ACPI error";
}

std::expected<uint64_t, AcpiError> write_acpi_tables(std::span<uint8_t> area, uint64_t area_gpa,
                                                     const AcpiConfig& config) {
  if (config.num_cpus == 0 || config.num_cpus > 255) return std::unexpected(AcpiError::TooManyCpus);
  if (area_gpa + area.size() > (1ull << 32)) return std::unexpected(AcpiError::AreaAbove4G);

  // Layout: RSDP, then the tables, each 16-byte aligned.
  size_t at = align16(36);
  auto place = [&](size_t size) {
    size_t here = at;
    at = align16(at + size);
    return here;
  };
  Bytes dsdt = make_dsdt(config);
  Bytes madt = make_madt(config);
  Bytes mcfg = make_mcfg(config);
  size_t dsdt_at = place(dsdt.size());
  Bytes fadt = make_fadt(config, area_gpa + dsdt_at);
  size_t fadt_at = place(fadt.size());
  size_t madt_at = place(madt.size());
  size_t mcfg_at = place(mcfg.size());
  Bytes xsdt = make_xsdt({area_gpa + fadt_at, area_gpa + madt_at, area_gpa + mcfg_at});
  size_t xsdt_at = place(xsdt.size());
  Bytes rsdp = make_rsdp(area_gpa + xsdt_at);
  if (at > area.size()) return std::unexpected(AcpiError::AreaTooSmall);

  std::memset(area.data(), 0, at);
  auto copy = [&](size_t offset, const Bytes& b) { std::memcpy(area.data() + offset, b.data(), b.size()); };
  copy(0, rsdp);
  copy(dsdt_at, dsdt);
  copy(fadt_at, fadt);
  copy(madt_at, madt);
  copy(mcfg_at, mcfg);
  copy(xsdt_at, xsdt);
  return area_gpa;
}

}  // namespace tern::arch::x86_64

// ACPI tables for the guest: RSDP, XSDT, FADT (hardware-reduced), MADT,
// MCFG and a DSDT describing the PCI host bridge, COM1, each virtio-mmio
// device, the power button (a Generic Event Device and a PNP0C0C button)
// and _S5_. An
// unmodified distribution kernel without MP-table support finds every vCPU
// and the PCI root through them. Addresses follow docs/vmm.md's memory map.
#pragma once

#include <cstdint>
#include <expected>
#include <optional>
#include <span>
#include <vector>

namespace tern::arch::x86_64 {

// A virtio-mmio device, described in the DSDT as "LNRO0005" with its
// register window and interrupt, which Linux's virtio_mmio driver binds.
struct VirtioMmioAcpi {
  uint32_t base = 0;
  uint32_t size = 0x1000;
  uint32_t gsi = 0;
};

struct AcpiConfig {
  uint32_t num_cpus = 1;  // APIC ids 0..num_cpus-1
  uint64_t lapic_address = 0xFEE0'0000;
  uint64_t ioapic_address = 0xFEC0'0000;
  uint64_t ecam_base = 0xE000'0000;
  uint8_t ecam_last_bus = 0;
  uint32_t mmio_window_base = 0xC000'0000;
  uint32_t mmio_window_size = 0x2000'0000;
  uint16_t sleep_control_port = 0x600;
  uint16_t sleep_status_port = 0x601;
  uint16_t reset_port = 0x602;
  uint8_t reset_value = 1;
  uint8_t s5_sleep_type = 5;  // SLP_TYP written to the sleep control register
  uint16_t com1_port = 0x3f8;
  uint8_t com1_irq = 4;
  std::vector<VirtioMmioAcpi> virtio_mmio;
  // The IOAPIC input of the Generic Event Device that presses the power
  // button (an edge runs its _EVT, which notifies \_SB.PWRB); nullopt: no
  // power button in the DSDT.
  std::optional<uint32_t> power_button_gsi;
};

enum class AcpiError { AreaTooSmall, TooManyCpus, AreaAbove4G };
const char* acpi_error_text(AcpiError error);

// Writes all tables into `area`, which the guest sees at `area_gpa` (the RSDP
// goes first, so area_gpa should be 0xE0000 where the kernel also searches).
// Returns the RSDP's guest physical address (for boot_params.acpi_rsdp_addr).
[[nodiscard]] std::expected<uint64_t, AcpiError> write_acpi_tables(std::span<uint8_t> area,
                                                                   uint64_t area_gpa,
                                                                   const AcpiConfig& config);

}  // namespace tern::arch::x86_64

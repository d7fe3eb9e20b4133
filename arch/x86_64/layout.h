// The guest physical memory map of docs/vmm.md, in one place. Everything
// that places something in guest memory (loaders, boot_params, ACPI, PCI)
// takes its addresses from here.
#pragma once

#include <cstdint>

namespace tern::arch::x86_64 {

inline constexpr uint64_t kKiB = 1024;
inline constexpr uint64_t kMiB = 1024 * kKiB;
inline constexpr uint64_t kGiB = 1024 * kMiB;

// RAM is [0, min(mem, 3 GiB)), the rest from 4 GiB up.
inline constexpr uint64_t kLowRamEnd = 3 * kGiB;
inline constexpr uint64_t kHighRamStart = 4 * kGiB;

// Boot structures (low memory).
inline constexpr uint64_t kGdtAddr = 0x500;
inline constexpr uint64_t kBootParamsAddr = 0x7000;
inline constexpr uint64_t kInitialStackTop = 0x8ff0;  // ELF kernels
inline constexpr uint64_t kPml4Addr = 0x9000;
inline constexpr uint64_t kPdptAddr = 0xa000;
inline constexpr uint64_t kPdAddr = 0xb000;           // four pages: 0xb000..0xefff
inline constexpr uint64_t kCmdlineAddr = 0x20000;
inline constexpr uint64_t kCmdlineMax = 0x10000;      // up to 0x30000, below the EBDA
inline constexpr uint64_t kEbdaStart = 0x9fc00;       // e820: reserved up to 1 MiB
inline constexpr uint64_t kAcpiStart = 0xe0000;       // RSDP, then the other tables
inline constexpr uint64_t kAcpiEnd = 0xf0000;
inline constexpr uint64_t kResetVectorAddr = 0xffff0;  // f000:fff0, where a real-mode restart jumps
inline constexpr uint64_t kKernelLoadAddr = 0x100000;  // protected-mode kernel / ELF

// Devices.
inline constexpr uint64_t kPciMmioStart = 0xc000'0000;
inline constexpr uint64_t kPciMmioEnd = 0xe000'0000;
inline constexpr uint64_t kPciEcamStart = 0xe000'0000;
inline constexpr uint64_t kPciEcamSize = 1 * kMiB;
// virtio-mmio devices: 4 KiB each, right after ECAM, one interrupt line each
// (IOAPIC inputs free of legacy devices: not 0-4 (timer, keyboard, cascade,
// COM2, COM1), 8 (RTC), 12 (mouse), 13 (FPU)).
inline constexpr uint64_t kVirtioMmioStart = 0xe010'0000;
inline constexpr uint64_t kVirtioMmioStride = 0x1000;
inline constexpr uint32_t kVirtioMmioIrqs[] = {5, 6, 7, 9, 10, 11, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23};
inline constexpr uint32_t kVirtioMmioMaxDevices = sizeof kVirtioMmioIrqs / sizeof kVirtioMmioIrqs[0];
// The power button's Generic Event Device: IOAPIC input 12, the PS/2
// mouse's ISA IRQ, which no device here uses (the FADT says there is no
// 8042 controller, so Linux never probes one).
inline constexpr uint32_t kPowerButtonIrq = 12;
inline constexpr uint64_t kIoapicAddr = 0xfec0'0000;
inline constexpr uint64_t kLapicAddr = 0xfee0'0000;

// KVM's private pages (KVM_SET_TSS_ADDR needs three pages, the EPT identity
// map one more), just below the 4 GiB boundary, away from RAM and devices.
inline constexpr uint64_t kKvmIdentityMapAddr = 0xfffb'c000;
inline constexpr uint64_t kKvmTssAddr = 0xfffb'd000;

// I/O ports.
inline constexpr uint16_t kCom1Port = 0x3f8;
inline constexpr uint32_t kCom1Irq = 4;
inline constexpr uint16_t kI8042DataPort = 0x60;
inline constexpr uint16_t kI8042CommandPort = 0x64;
inline constexpr uint16_t kPciConfigAddressPort = 0xcf8;
inline constexpr uint16_t kPciConfigDataPort = 0xcfc;
inline constexpr uint16_t kAcpiSleepControlPort = 0x600;  // then status 0x601, reset 0x602
inline constexpr uint16_t kAcpiResetPort = 0x602;
inline constexpr uint16_t kGuestExitPort = 0x501;  // QEMU's isa-debug-exit default
inline constexpr uint8_t kAcpiResetValue = 1;

// Size of the first RAM region for a guest with `mem` bytes.
inline constexpr uint64_t low_ram_size(uint64_t mem) { return mem < kLowRamEnd ? mem : kLowRamEnd; }
inline constexpr uint64_t high_ram_size(uint64_t mem) { return mem > kLowRamEnd ? mem - kLowRamEnd : 0; }

}  // namespace tern::arch::x86_64

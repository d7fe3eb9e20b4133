// Machine: one guest, built from a VmConfig and run to its end.
//
// It owns, in construction order (destroyed in reverse, vCPU threads first):
// the KVM fds, guest RAM, the VmServices over KVM, the devices (COM1, the
// ACPI power registers, i8042, the power button, the PCI root with one virtio-blk function per
// transport=pci --disk, one virtio-mmio device per transport=mmio --disk),
// the port-I/O and MMIO buses, and the vCPUs. run() starts one
// thread per vCPU, waits until the guest powers off or resets, a vCPU
// reports a crash, or shutdown() is called (the API's control path), then
// stops and joins every vCPU thread, closes the disks and returns the exit
// status of docs/vmm.md.
//
// Threads: create() and run() on the main thread; finish()/request() from
// vCPU threads; shutdown(), press_power_button(), disks() and the VirtioBlk
// methods from any thread.
#pragma once

#include <condition_variable>
#include <expected>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "devices/io_bus.h"
#include "devices/pci/pci_root.h"
#include "devices/power.h"
#include "devices/power_devices.h"
#include "devices/serial.h"
#include "devices/virtio/blk/device.h"
#include "devices/virtio/transport/mmio.h"
#include "vmm/config.h"
#include "vmm/console_input.h"
#include "vmm/guest_ram.h"
#include "vmm/kvm.h"
#include "vmm/kvm_services.h"
#include "vmm/vcpu.h"

namespace tern::vmm {

// A disk as the VMM and the API see it.
struct Disk {
  DiskConfig config;
  devices::VirtioBlk* device = nullptr;  // owned by its transport (PCI root, or Machine's MMIO list)
  uint8_t pci_slot = 0;                  // transport=pci
  uint64_t mmio_base = 0;                // transport=mmio
  uint32_t mmio_gsi = 0;                 // transport=mmio
};

// Where the i-th --disk sits if it is transport=mmio (base, IOAPIC input):
// MMIO disks take the slots of arch/x86_64/layout.h in command-line order.
struct MmioSlot {
  uint64_t base = 0;
  uint32_t gsi = 0;
};
std::vector<std::optional<MmioSlot>> mmio_slots(const std::vector<DiskConfig>& disks);
// " virtio_mmio.device=4K@0x...:IRQ" for each MMIO disk.
std::string virtio_mmio_cmdline(const std::vector<DiskConfig>& disks);

class Machine final : public VmControl, public devices::PowerSink {
 public:
  // Builds the whole machine; the message says which step failed.
  [[nodiscard]] static std::expected<std::unique_ptr<Machine>, std::string> create(const VmConfig& config);
  ~Machine() override;

  // Runs the guest to its end; returns the process exit status.
  int run();
  // Ends the VM as a guest power-off would (exit status 0).
  void shutdown() { finish(kExitPowerOff, "shutdown requested"); }
  // Presses the guest's ACPI power button (devices/power_devices.h); the
  // guest decides what to do, usually a clean power-off (exit status 0).
  void press_power_button() { power_button_->press(); }
  // Every vCPU prints its registers at its next exit (SIGUSR1); nothing
  // once the VM is over.
  void dump_vcpus();

  const std::vector<Disk>& disks() const { return disks_; }
  // Every descriptor open on a disk image or a backing file (for the sandbox).
  std::vector<int> image_fds() const;
  const VmConfig& config() const { return config_; }

  // VmControl (vCPU threads).
  void finish(int status, std::string why) override;
  bool finished() const override;
  // PowerSink (devices on vCPU threads).
  void request(devices::GuestPowerEvent event) override;
  void request_exit(uint8_t status) override;

 private:
  Machine(VmConfig config, Kvm kvm, VmFd vm, GuestRam ram);
  std::expected<void, std::string> load_guest();
  std::expected<void, std::string> build_devices();
  std::expected<void, std::string> build_vcpus();

  const VmConfig config_;
  Kvm kvm_;
  VmFd vm_;
  GuestRam ram_;
  KvmVmServices services_;
  std::unique_ptr<devices::Serial16550> serial_;
  std::unique_ptr<devices::AcpiPowerDevice> acpi_power_;
  std::unique_ptr<devices::I8042> i8042_;
  std::unique_ptr<devices::GuestExitDevice> guest_exit_;
  std::unique_ptr<devices::PowerButton> power_button_;
  std::unique_ptr<devices::PciRoot> pci_;
  std::vector<std::unique_ptr<devices::VirtioMmioDevice>> virtio_mmio_;
  devices::IoBus pio_;
  devices::IoBus mmio_;
  std::vector<Disk> disks_;
  uint64_t kernel_entry_ = 0;
  CpuProfile cpu_profile_ = CpuProfile::Host;  // resolved from the config at create()
  FallbackCounters fallbacks_;  // counted by vCPU threads, reported at exit

  mutable std::mutex mutex_;
  std::condition_variable done_cv_;
  std::optional<int> status_;  // guarded by mutex_; set once
  std::string why_;            // guarded by mutex_

  std::vector<std::unique_ptr<Vcpu>> vcpus_;  // their threads stop before the devices go
  std::unique_ptr<ConsoleInput> console_input_;  // last: stopped first
};

}  // namespace tern::vmm

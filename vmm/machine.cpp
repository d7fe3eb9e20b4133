#include "vmm/machine.h"

#include <fcntl.h>
#include <malloc.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <iterator>

#include "arch/x86_64/acpi.h"
#include "arch/x86_64/boot_setup.h"
#include "arch/x86_64/cpu_setup.h"
#include "arch/x86_64/kernel_loader.h"
#include "arch/x86_64/layout.h"
#include "base/thread_sandbox.h"
#include "block/open.h"
#include "devices/virtio/blk/factory.h"
#include "vmm/host_kvm.h"

namespace tern::vmm {

namespace ax = tern::arch::x86_64;

namespace {

using Unexpected = std::unexpected<std::string>;

std::expected<std::vector<uint8_t>, std::string> read_file(const std::string& what, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Unexpected(what + " " + path + ": " + errno_text(errno));
  std::vector<uint8_t> data((std::istreambuf_iterator<char>(in)), {});
  if (in.bad()) return Unexpected(what + " " + path + ": read failed");
  return data;
}

std::expected<UniqueFd, std::string> serial_output(const SerialConfig& c) {
  switch (c.mode) {
    case SerialMode::Tty: {
      int fd = ::fcntl(STDOUT_FILENO, F_DUPFD_CLOEXEC, 3);
      if (fd < 0) return Unexpected("--serial tty: dup stdout: " + errno_text(errno));
      return UniqueFd(fd);
    }
    case SerialMode::File: {
      int fd = ::open(c.path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
      if (fd < 0) return Unexpected("--serial file=" + c.path + ": " + errno_text(errno));
      return UniqueFd(fd);
    }
    case SerialMode::Off:
      break;
  }
  return UniqueFd();
}

}  // namespace

std::vector<std::optional<MmioSlot>> mmio_slots(const std::vector<DiskConfig>& disks) {
  std::vector<std::optional<MmioSlot>> out;
  size_t n = 0;
  for (const DiskConfig& d : disks) {
    if (d.transport != devices::VirtioTransport::Mmio || n >= ax::kVirtioMmioMaxDevices) {
      out.emplace_back();
      continue;
    }
    out.push_back(MmioSlot{ax::kVirtioMmioStart + n * ax::kVirtioMmioStride, ax::kVirtioMmioIrqs[n]});
    ++n;
  }
  return out;
}

std::string virtio_mmio_cmdline(const std::vector<DiskConfig>& disks) {
  std::string out;
  char buf[80];
  for (const auto& slot : mmio_slots(disks)) {
    if (!slot) continue;
    std::snprintf(buf, sizeof buf, " virtio_mmio.device=%lluK@0x%llx:%u",
                  static_cast<unsigned long long>(ax::kVirtioMmioStride / 1024),
                  static_cast<unsigned long long>(slot->base), slot->gsi);
    out += buf;
  }
  return out;
}

Machine::Machine(VmConfig config, Kvm kvm, VmFd vm, GuestRam ram)
    : config_(std::move(config)),
      kvm_(std::move(kvm)),
      vm_(std::move(vm)),
      ram_(std::move(ram)),
      services_(vm_.fd()) {}

Machine::~Machine() {
  console_input_.reset();
  vcpus_.clear();  // stop and join every vCPU thread before the devices go
}

std::expected<std::unique_ptr<Machine>, std::string> Machine::create(const VmConfig& config) {
  auto kvm = Kvm::open();
  if (!kvm) return Unexpected(kvm.error().message());
  auto vm = VmFd::create(*kvm);
  if (!vm) return Unexpected(vm.error().message());
  auto ram = GuestRam::create(vm->fd(), config.memory.size, config.memory.thp);
  if (!ram) return Unexpected(ram.error().message());
  std::unique_ptr<Machine> m(new Machine(config, std::move(*kvm), std::move(*vm), std::move(*ram)));
  m->cpu_profile_ = resolve_cpu_profile(config.cpu_profile, detect_host_kvm());
  if (auto r = m->services_.install_legacy_routes(); !r) return Unexpected(r.error().message());
  if (auto r = m->load_guest(); !r) return Unexpected(r.error());
  // The kernel and initramfs images were read into (now freed) buffers;
  // give that memory back rather than keep it resident for the VM's life.
  ::malloc_trim(0);
  if (auto r = m->build_devices(); !r) return Unexpected(r.error());
  if (auto r = m->build_vcpus(); !r) return Unexpected(r.error());
  return m;
}

std::expected<void, std::string> Machine::load_guest() {
  std::span<uint8_t> low = ram_.low();
  auto image = read_file("--kernel", config_.kernel);
  if (!image) return Unexpected(image.error());
  auto kernel = ax::load_kernel(*image, low);
  if (!kernel) return Unexpected("--kernel " + config_.kernel + ": " + kernel.error().message());
  kernel_entry_ = kernel->entry;

  ax::BootParamsConfig bp;
  std::string cmdline = config_.cmdline;  // bp.cmdline views it
  if (kernel->linux_kernel) {
    cmdline = guest_cmdline(cmdline, cpu_profile_);
    if (config_.virtio_mmio_cmdline) cmdline += virtio_mmio_cmdline(config_.disks);
  }
  bp.cmdline = cmdline;
  if (cpu_profile_ == CpuProfile::Emulated) {
    std::fprintf(stderr,
                 "tern: KVM here runs the guest kernel in its instruction emulator (kvm_pvm): hiding the CPU "
                 "features it cannot execute; kernel command line: \"%s\" (--cpus profile=host to change neither)\n",
                 cmdline.c_str());
  }
  bp.e820 = ax::make_e820(config_.memory.size);
  if (config_.initramfs) {
    auto initrd = read_file("--initramfs", *config_.initramfs);
    if (!initrd) return Unexpected(initrd.error());
    auto gpa = ax::load_initramfs(*initrd, *kernel, low);
    if (!gpa) return Unexpected("--initramfs " + *config_.initramfs + ": " + gpa.error().message());
    bp.initrd_gpa = *gpa;
    bp.initrd_size = initrd->size();
  }

  ax::AcpiConfig acpi;
  acpi.num_cpus = config_.cpus;
  acpi.lapic_address = ax::kLapicAddr;
  acpi.ioapic_address = ax::kIoapicAddr;
  acpi.ecam_base = ax::kPciEcamStart;
  acpi.mmio_window_base = static_cast<uint32_t>(ax::kPciMmioStart);
  acpi.mmio_window_size = static_cast<uint32_t>(ax::kPciMmioEnd - ax::kPciMmioStart);
  acpi.com1_port = ax::kCom1Port;
  acpi.com1_irq = ax::kCom1Irq;
  acpi.power_button_gsi = ax::kPowerButtonIrq;
  for (const auto& slot : mmio_slots(config_.disks)) {
    if (slot) {
      acpi.virtio_mmio.push_back(ax::VirtioMmioAcpi{.base = static_cast<uint32_t>(slot->base),
                                                    .size = static_cast<uint32_t>(ax::kVirtioMmioStride),
                                                    .gsi = slot->gsi});
    }
  }
  auto rsdp = ax::write_acpi_tables(low.subspan(ax::kAcpiStart, ax::kAcpiEnd - ax::kAcpiStart), ax::kAcpiStart,
                                    acpi);
  if (!rsdp) return Unexpected(std::string("ACPI tables: ") + ax::acpi_error_text(rsdp.error()));
  bp.rsdp_gpa = *rsdp;

  if (auto r = ax::write_boot_params(low, *kernel, bp); !r) return Unexpected("boot_params: " + r.error().message());
  ax::write_gdt(low);
  ax::write_identity_page_tables(low);
  ax::write_reset_vector(low);
  return {};
}

std::expected<void, std::string> Machine::build_devices() {
  auto fd = serial_output(config_.serial);
  if (!fd) return Unexpected(fd.error());
  std::unique_ptr<devices::ConsoleOutput> out;
  if (*fd) {
    devices::ConsoleOutputOptions o;
    if (config_.serial.mode == SerialMode::File) o.max_bytes = config_.serial.max_size;
    auto started = devices::ConsoleOutput::start(std::move(*fd), o);
    if (!started) return Unexpected("serial console: " + started.error().message());
    out = std::move(*started);
  }
  serial_ = std::make_unique<devices::Serial16550>(
      std::move(out), [this](bool level) { services_.set_irq_line(ax::kCom1Irq, level); });
  acpi_power_ = std::make_unique<devices::AcpiPowerDevice>(*this);
  i8042_ = std::make_unique<devices::I8042>(*this);
  guest_exit_ = std::make_unique<devices::GuestExitDevice>(*this);
  auto button_line = services_.create_irq_line(ax::kPowerButtonIrq);
  if (!button_line) return Unexpected("power button: " + button_line.error().message());
  power_button_ = std::make_unique<devices::PowerButton>(std::move(*button_line));
  pci_ = std::make_unique<devices::PciRoot>(ax::kPciMmioStart, ax::kPciMmioEnd - ax::kPciMmioStart);

  bool ok = pio_.add(ax::kCom1Port, devices::Serial16550::kSize, *serial_) &&
            pio_.add(ax::kI8042DataPort, devices::I8042::kSize, *i8042_) &&
            pio_.add(ax::kAcpiSleepControlPort, devices::AcpiPowerDevice::kSize, *acpi_power_) &&
            pio_.add(ax::kGuestExitPort, devices::GuestExitDevice::kSize, *guest_exit_) &&
            pio_.add(devices::PciRoot::kType1Base, devices::PciRoot::kType1Size, pci_->type1_handler()) &&
            mmio_.add(ax::kPciEcamStart, ax::kPciEcamSize, pci_->ecam_handler()) &&
            mmio_.add(ax::kPciMmioStart, ax::kPciMmioEnd - ax::kPciMmioStart, pci_->mmio_handler());
  if (!ok) std::abort();  // fixed, disjoint ranges: a broken invariant

  devices::GuestMemory memory = ram_.memory();
  auto slots = mmio_slots(config_.disks);
  for (size_t i = 0; i < config_.disks.size(); ++i) {
    const DiskConfig& d = config_.disks[i];
    bool mmio = d.transport == devices::VirtioTransport::Mmio;
    if (mmio && !slots[i]) return Unexpected("--disk " + d.device.id + ": no virtio-mmio slot left");
    devices::MmioPlacement place;
    if (mmio) place = {.base = slots[i]->base, .gsi = slots[i]->gsi};
    auto made = devices::make_virtio_blk(d.open, d.device, d.transport, place, services_, memory);
    if (!made) return Unexpected("--" + made.error().message);
    Disk disk{d, made->blk};
    if (made->mmio) {
      if (!mmio_.add(place.base, devices::kVirtioMmioSize, *made->mmio)) std::abort();  // disjoint fixed slots
      disk.mmio_base = place.base;
      disk.mmio_gsi = place.gsi;
      virtio_mmio_.push_back(std::move(made->mmio));
    } else {
      auto slot = pci_->add_device(std::move(made->pci));
      if (!slot) return Unexpected("--disk " + d.device.id + ": PCI: " + devices::pci_error_text(slot.error()));
      disk.pci_slot = *slot;
    }
    disks_.push_back(disk);
  }
  pio_.seal();
  mmio_.seal();
  return {};
}

std::expected<void, std::string> Machine::build_vcpus() {
  auto supported = kvm_.supported_cpuid();
  if (!supported) return Unexpected(supported.error().message());
  const auto brand = ax::host_brand_string();
  for (uint32_t i = 0; i < config_.cpus; ++i) {
    auto v = Vcpu::create(kvm_, vm_.fd(), i);
    if (!v) return Unexpected("vCPU " + std::to_string(i) + ": " + v.error().message());
    auto cpuid = *supported;
    ax::filter_cpuid(cpuid, i, config_.cpus);
    ax::set_brand_string(cpuid, brand);
    if (cpu_profile_ == CpuProfile::Emulated) ax::hide_unemulated_features(cpuid);
    if (size_t n = ax::drop_features_without_prerequisites(cpuid); n > 0 && i == 0) {
      std::fprintf(stderr,
                   "tern: the host's CPUID offers %zu feature bits without their prerequisites (such as AVX "
                   "without XSAVE); the guest does not see them\n",
                   n);
    }
    if (auto r = (*v)->setup_common(std::move(cpuid)); !r) {
      return Unexpected("vCPU " + std::to_string(i) + ": " + r.error().message());
    }
    // The BSP enters the kernel; APs stay in wait-for-SIPI (KVM's initial
    // state for them with an in-kernel LAPIC) until the kernel wakes them.
    if (i == 0) {
      if (auto r = (*v)->setup_boot(kernel_entry_); !r) return Unexpected("vCPU 0: " + r.error().message());
    } else if (auto r = (*v)->setup_wait_for_sipi(); !r) {
      return Unexpected("vCPU " + std::to_string(i) + ": " + r.error().message());
    }
    vcpus_.push_back(std::move(*v));
  }
  return {};
}

void Machine::finish(int status, std::string why) {
  {
    std::lock_guard lock(mutex_);
    if (status_) return;
    status_ = status;
    why_ = std::move(why);
  }
  done_cv_.notify_all();
}

std::vector<int> Machine::image_fds() const {
  std::vector<int> out;
  for (const Disk& d : disks_) d.device->image_fds(out);
  return out;
}

void Machine::dump_vcpus() {
  // Under mutex_ and before status_ is set, every vCPU thread is running:
  // run() stops and clears them only after the status is set.
  std::lock_guard lock(mutex_);
  if (status_) return;
  for (auto& v : vcpus_) v->request_dump();
}

bool Machine::finished() const {
  std::lock_guard lock(mutex_);
  return status_.has_value();
}

void Machine::request(devices::GuestPowerEvent event) {
  if (event == devices::GuestPowerEvent::PowerOff) finish(kExitPowerOff, "guest powered off");
  else finish(kExitReset, "guest reset");
}

void Machine::request_exit(uint8_t status) {
  finish(guest_exit_status(status), "the guest ended the VM with status " + std::to_string(status));
}

int Machine::run() {
  Vcpu::install_kick_handler();
  if (config_.serial.mode == SerialMode::Tty) {
    auto input = ConsoleInput::start(STDIN_FILENO, *serial_);
    if (!input) {
      std::fprintf(stderr, "tern: console input: %s\n", input.error().message().c_str());
      return kExitVmmFailure;
    }
    console_input_ = std::move(*input);
  }
  for (auto& v : vcpus_) v->start(VcpuEnv{pio_, mmio_, ram_.memory(), fallbacks_}, *this);
  // Every thread of the VM runs: the main thread confines itself last (vmm/sandbox.h).
  enter_thread_sandbox(ThreadKind::Main);
  int status;
  std::string why;
  {
    std::unique_lock lock(mutex_);
    auto done = [&] { return status_.has_value(); };
    if (config_.timeout_s == 0) {
      done_cv_.wait(lock, done);
    } else if (!done_cv_.wait_for(lock, std::chrono::seconds(config_.timeout_s), done)) {
      status_ = kExitTimeout;
      why_ = "--timeout " + std::to_string(config_.timeout_s) + " s ran out; the VM was stopped";
    }
    status = *status_;
    why = why_;
  }
  console_input_.reset();
  for (auto& v : vcpus_) v->stop();
  vcpus_.clear();  // joins

  if (status == kExitGuestCrash || status == kExitVmmFailure) {
    std::fprintf(stderr, "tern: %s\n", why.c_str());
  } else if (status != kExitPowerOff) {
    std::fprintf(stderr, "tern: %s (exit status %d)\n", why.c_str(), status);
  }
  for (const Disk& d : disks_) {
    if (auto r = d.device->close(); !r) {
      std::fprintf(stderr, "tern: --disk %s: closing: %s\n", d.config.device.id.c_str(), r.error().message().c_str());
      status = kExitVmmFailure;
    }
  }
  if (fallbacks_.total() != 0) {
    std::fprintf(stderr, "tern: instructions completed for KVM's emulator: %s\n", fallbacks_.summary().c_str());
  }
  // The console's last bytes (within its drain timeout), then what it lost.
  devices::ConsoleOutputStats console = serial_->output() ? serial_->output()->close() : devices::ConsoleOutputStats{};
  if (console.dropped() != 0) {
    std::string why;
    auto add = [&](uint64_t n, const std::string& what) {
      if (n != 0) why += (why.empty() ? "" : ", ") + std::to_string(n) + " " + what;
    };
    add(console.dropped_full, "while the reader was slow");
    add(console.dropped_gone, "after the reader went away" +
                                  (console.write_errno ? " (" + errno_text(console.write_errno) + ")" : std::string()));
    add(console.dropped_cap, "past max_size=" + std::to_string(config_.serial.max_size));
    std::fprintf(stderr, "tern: serial console: %llu bytes dropped: %s\n",
                 static_cast<unsigned long long>(console.dropped()), why.c_str());
  }
  return status;
}

}  // namespace tern::vmm

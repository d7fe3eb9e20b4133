#include "tests/devices/virtio/mini_vm.h"

#include <elf.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <pthread.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

#include <atomic>
#include <cstdlib>
#include <condition_variable>
#include <cstring>
#include <fstream>
#include <iterator>
#include <mutex>
#include <thread>
#include <vector>

#include "base/event_fd.h"
#include "base/unique_fd.h"
#include "devices/pci/pci_root.h"
#include "devices/virtio/transport/pci.h"
#include "vmm/emulation_fallback.h"

namespace tern::devices::testing {

namespace {


class KvmServices;

class KvmMsiIrq final : public MsiIrq {
 public:
  KvmMsiIrq(KvmServices& s, uint32_t gsi, EventFd fd) : s_(s), gsi_(gsi), fd_(std::move(fd)) {}
  ~KvmMsiIrq() override;
  SysResult<void> set_message(std::optional<MsiMessage> m) override;
  void trigger() override {
    if (armed_) fd_.signal();
  }
  int eventfd() const override { return fd_.fd(); }

 private:
  KvmServices& s_;
  uint32_t gsi_;
  EventFd fd_;
  bool irqfd_ = false;
  std::atomic<bool> armed_{false};
};

class KvmServices final : public VmServices {
 public:
  explicit KvmServices(int vm) : vm_(vm) {}
  SysResult<void> add_ioeventfd(AddressSpace space, uint64_t addr, uint32_t len, int fd,
                                std::optional<uint64_t> datamatch) override {
    return ioeventfd(space, addr, len, fd, datamatch, 0);
  }
  SysResult<void> remove_ioeventfd(AddressSpace space, uint64_t addr, uint32_t len, int fd,
                                   std::optional<uint64_t> datamatch) override {
    return ioeventfd(space, addr, len, fd, datamatch, KVM_IOEVENTFD_FLAG_DEASSIGN);
  }
  SysResult<std::unique_ptr<MsiIrq>> create_msi_irq() override {
    auto fd = EventFd::create();
    if (!fd) return std::unexpected(fd.error());
    std::lock_guard lock(mutex_);
    return std::make_unique<KvmMsiIrq>(*this, next_gsi_++, std::move(*fd));
  }
  void set_irq_line(uint32_t, bool) override {}
  // MiniVm has no IOAPIC routes: its device is virtio-pci with MSI-X only.
  SysResult<std::unique_ptr<IrqLine>> create_irq_line(uint32_t) override {
    return std::unexpected(SysError{"MiniVm: no legacy interrupt lines", ENOSYS});
  }

  SysResult<void> route(uint32_t gsi, std::optional<MsiMessage> m) {
    std::lock_guard lock(mutex_);
    std::erase_if(routes_, [&](const kvm_irq_routing_entry& e) { return e.gsi == gsi; });
    if (m) {
      kvm_irq_routing_entry e{};
      e.gsi = gsi;
      e.type = KVM_IRQ_ROUTING_MSI;
      e.u.msi.address_lo = static_cast<uint32_t>(m->address);
      e.u.msi.address_hi = static_cast<uint32_t>(m->address >> 32);
      e.u.msi.data = m->data;
      routes_.push_back(e);
    }
    // struct kvm_irq_routing as the kernel (C) lays it out: nr, flags, then
    // the entries at offset 8. g++ places the flexible array at 16 and sizes
    // the struct 16, so the layout and the ioctl number are spelled out.
    std::vector<uint8_t> buf(8 + routes_.size() * sizeof(kvm_irq_routing_entry));
    uint32_t header[2] = {static_cast<uint32_t>(routes_.size()), 0};
    std::memcpy(buf.data(), header, sizeof header);
    std::memcpy(buf.data() + 8, routes_.data(), routes_.size() * sizeof(kvm_irq_routing_entry));
    auto* table = buf.data();
    constexpr unsigned long kSetGsiRouting = _IOC(_IOC_WRITE, KVMIO, 0x6a, 8);
    if (::ioctl(vm_, kSetGsiRouting, table) < 0) {
      return std::unexpected(SysError::from_errno("KVM_SET_GSI_ROUTING"));
    }
    return {};
  }
  int vm() const { return vm_; }

 private:
  SysResult<void> ioeventfd(AddressSpace space, uint64_t addr, uint32_t len, int fd,
                            std::optional<uint64_t> datamatch, uint32_t flags) {
    kvm_ioeventfd io{};
    io.addr = addr;
    io.len = len;
    io.fd = fd;
    io.flags = flags | (space == AddressSpace::Pio ? KVM_IOEVENTFD_FLAG_PIO : 0u);
    if (datamatch) {
      io.flags |= KVM_IOEVENTFD_FLAG_DATAMATCH;
      io.datamatch = *datamatch;
    }
    if (::ioctl(vm_, KVM_IOEVENTFD, &io) < 0) return std::unexpected(SysError::from_errno("KVM_IOEVENTFD"));
    return {};
  }

  int vm_;
  std::mutex mutex_;
  uint32_t next_gsi_ = 24;                      // guarded by mutex_
  std::vector<kvm_irq_routing_entry> routes_;  // guarded by mutex_
};

KvmMsiIrq::~KvmMsiIrq() {
  if (irqfd_) {
    kvm_irqfd f{};
    f.fd = static_cast<uint32_t>(fd_.fd());
    f.gsi = gsi_;
    f.flags = KVM_IRQFD_FLAG_DEASSIGN;
    ::ioctl(s_.vm(), KVM_IRQFD, &f);
  }
}

SysResult<void> KvmMsiIrq::set_message(std::optional<MsiMessage> m) {
  if (auto r = s_.route(gsi_, m); !r) return r;
  if (m && !irqfd_) {
    kvm_irqfd f{};
    f.fd = static_cast<uint32_t>(fd_.fd());
    f.gsi = gsi_;
    if (::ioctl(s_.vm(), KVM_IRQFD, &f) < 0) return std::unexpected(SysError::from_errno("KVM_IRQFD"));
    irqfd_ = true;
  }
  armed_ = m.has_value();
  return {};
}

void on_signal(int) {}

struct Mapping {
  void* p = MAP_FAILED;
  size_t n = 0;
  ~Mapping() {
    if (p != MAP_FAILED) ::munmap(p, n);
  }
};

}  // namespace

MiniVmResult run_mini_vm(const MiniVmOptions& opt, std::unique_ptr<VirtioBlk> blk) {
  MiniVmResult res;
  auto fail = [&](const std::string& what) {
    res.error = what + ": " + std::strerror(errno);
    return res;
  };
  UniqueFd kvm(::open("/dev/kvm", O_RDWR | O_CLOEXEC));
  if (!kvm) return fail("open /dev/kvm");
  UniqueFd vm(::ioctl(kvm.get(), KVM_CREATE_VM, 0));
  if (!vm) return fail("KVM_CREATE_VM");
  if (::ioctl(vm.get(), KVM_SET_TSS_ADDR, 0xfffbd000ul) < 0) return fail("KVM_SET_TSS_ADDR");
  if (::ioctl(vm.get(), KVM_CREATE_IRQCHIP, 0) < 0) return fail("KVM_CREATE_IRQCHIP");
  Mapping ram;
  ram.n = opt.memory;
  ram.p = ::mmap(nullptr, ram.n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (ram.p == MAP_FAILED) return fail("mmap");
  auto* mem = static_cast<uint8_t*>(ram.p);
  kvm_userspace_memory_region region{0, 0, 0, ram.n, reinterpret_cast<uint64_t>(mem)};
  if (::ioctl(vm.get(), KVM_SET_USER_MEMORY_REGION, &region) < 0) return fail("KVM_SET_USER_MEMORY_REGION");
  UniqueFd vcpu(::ioctl(vm.get(), KVM_CREATE_VCPU, 0));
  if (!vcpu) return fail("KVM_CREATE_VCPU");
  Mapping runmap;
  runmap.n = static_cast<size_t>(::ioctl(kvm.get(), KVM_GET_VCPU_MMAP_SIZE, 0));
  runmap.p = ::mmap(nullptr, runmap.n, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu.get(), 0);
  if (runmap.p == MAP_FAILED) return fail("mmap vcpu");
  auto* run = static_cast<kvm_run*>(runmap.p);

  // No KVM_SET_CPUID2: the mini VM's guest runs on a vCPU with an empty
  // CPUID (KVM enters long mode from the sregs below regardless), so it
  // skips the checks that need features (SMAP) and, having no emulation
  // fallback, never meets an instruction that only tern completes. (The
  // call it used to make spelled the uapi ioctl number, which g++ sizes
  // wrongly, vmm/kvm.h; it always failed with EINVAL, unnoticed.)

  // The kernel: every PT_LOAD to its p_paddr.
  std::ifstream in(opt.kernel, std::ios::binary);
  std::vector<uint8_t> elf((std::istreambuf_iterator<char>(in)), {});
  if (elf.size() < sizeof(Elf64_Ehdr) || std::memcmp(elf.data(), ELFMAG, SELFMAG) != 0) {
    res.error = "not an ELF: " + opt.kernel;
    return res;
  }
  Elf64_Ehdr eh;
  std::memcpy(&eh, elf.data(), sizeof eh);
  for (unsigned i = 0; i < eh.e_phnum; ++i) {
    Elf64_Phdr ph;
    uint64_t at = eh.e_phoff + uint64_t{i} * eh.e_phentsize;
    if (at + sizeof ph > elf.size()) break;
    std::memcpy(&ph, elf.data() + at, sizeof ph);
    if (ph.p_type != PT_LOAD) continue;
    if (ph.p_paddr + ph.p_memsz > ram.n || ph.p_offset + ph.p_filesz > elf.size()) {
      res.error = "segment outside RAM";
      return res;
    }
    std::memcpy(mem + ph.p_paddr, elf.data() + ph.p_offset, ph.p_filesz);
    std::memset(mem + ph.p_paddr + ph.p_filesz, 0, ph.p_memsz - ph.p_filesz);
  }

  // GDT at 0x500, identity map of 4 GiB (PML4 0x9000), boot_params 0x7000,
  // command line 0x20000 (docs/vmm.md).
  uint64_t gdt[3] = {0, 0x00af9a000000ffffull, 0x00cf92000000ffffull};
  std::memcpy(mem + 0x500, gdt, sizeof gdt);
  auto put64 = [&](uint64_t gpa, uint64_t v) { std::memcpy(mem + gpa, &v, 8); };
  put64(0x9000, 0xa000 | 3);
  for (uint64_t i = 0; i < 4; ++i) {
    put64(0xa000 + 8 * i, (0xb000 + 0x1000 * i) | 3);
    for (uint64_t j = 0; j < 512; ++j) put64(0xb000 + 0x1000 * i + 8 * j, ((i * 512 + j) << 21) | 0x83);
  }
  std::memcpy(mem + 0x20000, opt.cmdline.c_str(), opt.cmdline.size() + 1);
  uint32_t cmd_ptr = 0x20000;
  std::memcpy(mem + 0x7000 + 0x228, &cmd_ptr, 4);

  kvm_sregs sregs;
  if (::ioctl(vcpu.get(), KVM_GET_SREGS, &sregs) < 0) return fail("KVM_GET_SREGS");
  kvm_segment code{};
  code.base = 0;
  code.limit = 0xffffffff;
  code.selector = 8;
  code.type = 11;
  code.present = 1;
  code.s = 1;
  code.l = 1;
  code.g = 1;
  kvm_segment data = code;
  data.selector = 0x10;
  data.type = 3;
  data.l = 0;
  data.db = 1;
  sregs.cs = code;
  sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = data;
  sregs.gdt.base = 0x500;
  sregs.gdt.limit = sizeof gdt - 1;
  sregs.cr3 = 0x9000;
  sregs.cr4 = 0x20;              // PAE
  sregs.cr0 = 0x80000033;        // PG NE ET MP PE
  sregs.efer = 0x500;            // LME LMA
  if (::ioctl(vcpu.get(), KVM_SET_SREGS, &sregs) < 0) return fail("KVM_SET_SREGS");
  kvm_regs regs{};
  regs.rip = eh.e_entry;
  regs.rsi = 0x7000;
  regs.rsp = 0x8ff0;
  regs.rflags = 2;
  if (::ioctl(vcpu.get(), KVM_SET_REGS, &regs) < 0) return fail("KVM_SET_REGS");

  auto probe = tern::vmm::probe_mxcsr_reachable(vcpu.get());
  if (!probe) return fail("probe MXCSR");
  const bool mxcsr_reachable = *probe;

  KvmServices services(vm.get());
  GuestMemory guest({GuestMemory::Region{0, ram.n, mem}});
  auto dev = VirtioPciDevice::create(std::move(blk), services, guest, "virtio-blk");
  if (!dev) {
    res.error = "virtio-pci: " + dev.error().message();
    return res;
  }
  PciRoot root;
  if (auto slot = root.add_device(std::move(*dev)); !slot) {
    res.error = std::string("PciRoot: ") + pci_error_text(slot.error());
    return res;
  }

  // Watchdog: kicks the vCPU out of KVM_RUN when the time is up.
  struct sigaction sa{};
  sa.sa_handler = on_signal;
  ::sigaction(SIGUSR1, &sa, nullptr);
  std::mutex wm;
  std::condition_variable wcv;
  bool finished = false;
  std::atomic<bool> timed_out{false};
  pthread_t self = pthread_self();
  std::thread watchdog([&] {
    std::unique_lock lock(wm);
    int timeout = opt.timeout_s;
    if (const char* t = std::getenv("MINI_VM_TIMEOUT")) timeout = std::atoi(t);
    if (!wcv.wait_for(lock, std::chrono::seconds(timeout), [&] { return finished; })) {
      timed_out = true;
      run->immediate_exit = 1;
      pthread_kill(self, SIGUSR1);
    }
  });

    for (;;) {
    if (::ioctl(vcpu.get(), KVM_RUN, 0) < 0) {
      if (errno == EINTR && timed_out) {
        res.exit_code = 124;
        break;
      }
      if (errno == EINTR || errno == EAGAIN) continue;
      res.error = std::string("KVM_RUN: ") + std::strerror(errno);
      break;
    }
    if (run->exit_reason == KVM_EXIT_IO) {
      auto* p = reinterpret_cast<uint8_t*>(run) + run->io.data_offset;
      for (uint32_t n = 0; n < run->io.count; ++n, p += run->io.size) {
        uint16_t port = run->io.port;
        bool out = run->io.direction == KVM_EXIT_IO_OUT;
        if (out && port == 0x3f8) {
          res.serial.push_back(static_cast<char>(*p));
          if (*p == '\n' && opt.on_line) {
            size_t start = res.serial.rfind('\n', res.serial.size() - 2);
            start = start == std::string::npos ? 0 : start + 1;
            if (opt.on_line(std::string_view(res.serial).substr(start))) res.exit_code = 0;
          }
        }
        if (out && port == 0x600 && *p == 0x34) res.exit_code = 0;
        if (out && port == 0x602) res.exit_code = 2;
        if (port >= PciRoot::kType1Base && port < PciRoot::kType1Base + PciRoot::kType1Size) {
          uint64_t off = port - PciRoot::kType1Base;
          if (out) root.type1_handler().write(off, std::span<const uint8_t>(p, run->io.size));
          else root.type1_handler().read(off, std::span<uint8_t>(p, run->io.size));
        } else if (!out) {
          std::memset(p, port == 0x3fd ? 0x60 : 0xff, run->io.size);
        }
      }
      if (res.exit_code >= 0) break;
    } else if (run->exit_reason == KVM_EXIT_MMIO) {
      uint64_t a = run->mmio.phys_addr;
      std::span<uint8_t> d(run->mmio.data, run->mmio.len);
      uint64_t base = PciRoot::kDefaultWindowBase;
      if (a >= base && a < base + PciRoot::kDefaultWindowSize) {
        if (run->mmio.is_write) root.mmio_handler().write(a - base, d);
        else root.mmio_handler().read(a - base, d);
      } else if (!run->mmio.is_write) {
        std::memset(run->mmio.data, 0xff, run->mmio.len);
      }
    } else if (run->exit_reason == KVM_EXIT_SHUTDOWN) {
      res.exit_code = 2;
      break;
    } else if (run->exit_reason == KVM_EXIT_HLT) {
      continue;
    } else if (run->exit_reason == KVM_EXIT_INTERNAL_ERROR &&
               run->internal.suberror == KVM_INTERNAL_ERROR_EMULATION) {
      // An emulating KVM (kvm_pvm) gives up on int3, clac/stac, ldmxcsr...:
      // complete them as tern's vCPU loop does.
      tern::vmm::KvmVcpuFallbackCpu cpu(vcpu.get(), mxcsr_reachable);
      auto done = tern::vmm::complete_failed_instruction(tern::vmm::emulation_failure_bytes(*run), cpu, guest);
      if (done) continue;
      res.exit_code = 3;
      res.error = "emulation failure not completed: " + done.error().message();
      break;
    } else {
      kvm_regs r{};
      ::ioctl(vcpu.get(), KVM_GET_REGS, &r);
      res.exit_code = 3;
      res.error = "exit reason " + std::to_string(run->exit_reason) + " rip " + std::to_string(r.rip);
      break;
    }
  }
  {
    std::lock_guard lock(wm);
    finished = true;
  }
  wcv.notify_all();
  watchdog.join();
  // `root` (and with it the device and its queue threads) goes before the VM.
  return res;
}

}  // namespace tern::devices::testing

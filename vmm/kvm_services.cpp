#include "vmm/kvm_services.h"

#include <sys/ioctl.h>

#include <atomic>
#include <cerrno>
#include <string>
#include <cstdio>
#include <cstring>
#include <vector>

#include "base/event_fd.h"
#include "vmm/kvm.h"

namespace tern::vmm {

namespace {

class KvmMsiIrq final : public devices::MsiIrq {
 public:
  KvmMsiIrq(KvmVmServices& services, uint32_t gsi, EventFd fd)
      : services_(services), gsi_(gsi), fd_(std::move(fd)) {}
  ~KvmMsiIrq() override {
    if (bound_) {
      kvm_irqfd f{};
      f.fd = static_cast<uint32_t>(fd_.fd());
      f.gsi = gsi_;
      f.flags = KVM_IRQFD_FLAG_DEASSIGN;
      // A failure leaves a dead binding in a VM that is going away; nothing
      // to recover.
      (void)kvm_ioctl(services_.vm_fd(), KVM_IRQFD, "KVM_IRQFD deassign", &f);
      (void)services_.set_msi_route(gsi_, std::nullopt);
    }
  }

  SysResult<void> set_message(std::optional<devices::MsiMessage> message) override {
    if (auto r = services_.set_msi_route(gsi_, message); !r) return r;
    if (message && !bound_) {
      kvm_irqfd f{};
      f.fd = static_cast<uint32_t>(fd_.fd());
      f.gsi = gsi_;
      if (auto r = kvm_ioctl(services_.vm_fd(), KVM_IRQFD, "KVM_IRQFD", &f); !r) {
        return std::unexpected(r.error());
      }
      bound_ = true;
    }
    armed_.store(message.has_value(), std::memory_order_release);
    return {};
  }
  void trigger() override {
    if (armed_.load(std::memory_order_acquire)) fd_.signal();
  }
  int eventfd() const override { return fd_.fd(); }

 private:
  KvmVmServices& services_;
  const uint32_t gsi_;
  EventFd fd_;
  bool bound_ = false;  // set_message() is serialized by the transport's lock
  std::atomic<bool> armed_{false};
};

// An irqfd on a legacy GSI, which install_legacy_routes() sends to the
// IOAPIC pin of the same number: each trigger() is one edge.
class KvmIrqLine final : public devices::IrqLine {
 public:
  KvmIrqLine(int vm_fd, uint32_t gsi, EventFd fd) : vm_fd_(vm_fd), gsi_(gsi), fd_(std::move(fd)) {}
  ~KvmIrqLine() override {
    kvm_irqfd f{};
    f.fd = static_cast<uint32_t>(fd_.fd());
    f.gsi = gsi_;
    f.flags = KVM_IRQFD_FLAG_DEASSIGN;
    (void)kvm_ioctl(vm_fd_, KVM_IRQFD, "KVM_IRQFD deassign", &f);  // the VM is going away
  }
  void trigger() override { fd_.signal(); }

 private:
  const int vm_fd_;
  const uint32_t gsi_;
  EventFd fd_;
};

}  // namespace

SysResult<std::unique_ptr<devices::IrqLine>> KvmVmServices::create_irq_line(uint32_t gsi) {
  if (gsi == 0 || gsi == 2 || gsi >= kLegacyGsis) {
    return std::unexpected(SysError{"irq line: GSI must be 1 or 3..23", EINVAL});
  }
  auto fd = EventFd::create();
  if (!fd) return std::unexpected(fd.error());
  kvm_irqfd f{};
  f.fd = static_cast<uint32_t>(fd->fd());
  f.gsi = gsi;
  if (auto r = kvm_ioctl(vm_fd_, KVM_IRQFD, "KVM_IRQFD", &f); !r) return std::unexpected(r.error());
  return std::make_unique<KvmIrqLine>(vm_fd_, gsi, std::move(*fd));
}

SysResult<void> KvmVmServices::ioeventfd(devices::AddressSpace space, uint64_t addr, uint32_t len, int fd,
                                         std::optional<uint64_t> datamatch, uint32_t flags) {
  kvm_ioeventfd io{};
  io.addr = addr;
  io.len = len;
  io.fd = fd;
  io.flags = flags | (space == devices::AddressSpace::Pio ? KVM_IOEVENTFD_FLAG_PIO : 0u);
  if (datamatch) {
    io.flags |= KVM_IOEVENTFD_FLAG_DATAMATCH;
    io.datamatch = *datamatch;
  }
  if (auto r = kvm_ioctl(vm_fd_, KVM_IOEVENTFD, "KVM_IOEVENTFD", &io); !r) return std::unexpected(r.error());
  return {};
}

SysResult<void> KvmVmServices::add_ioeventfd(devices::AddressSpace space, uint64_t addr, uint32_t len, int fd,
                                             std::optional<uint64_t> datamatch) {
  return ioeventfd(space, addr, len, fd, datamatch, 0);
}

SysResult<void> KvmVmServices::remove_ioeventfd(devices::AddressSpace space, uint64_t addr, uint32_t len,
                                                int fd, std::optional<uint64_t> datamatch) {
  return ioeventfd(space, addr, len, fd, datamatch, KVM_IOEVENTFD_FLAG_DEASSIGN);
}

SysResult<std::unique_ptr<devices::MsiIrq>> KvmVmServices::create_msi_irq() {
  auto fd = EventFd::create();
  if (!fd) return std::unexpected(fd.error());
  std::lock_guard lock(mutex_);
  return std::make_unique<KvmMsiIrq>(*this, next_gsi_++, std::move(*fd));
}

void KvmVmServices::set_irq_line(uint32_t irq, bool level) {
  kvm_irq_level l{};
  l.irq = irq;
  l.level = level ? 1 : 0;
  // Fails only for a GSI KVM does not know, which the VMM never passes.
  if (auto r = kvm_ioctl(vm_fd_, KVM_IRQ_LINE, "KVM_IRQ_LINE", &l); !r) {
    std::fprintf(stderr, "tern: %s (irq %u)\n", r.error().message().c_str(), irq);
  }
}

SysResult<void> KvmVmServices::set_msi_route(uint32_t gsi, std::optional<devices::MsiMessage> message) {
  std::lock_guard lock(mutex_);
  if (message) msi_routes_[gsi] = *message;
  else msi_routes_.erase(gsi);
  return commit_routes();
}

SysResult<void> KvmVmServices::install_legacy_routes() {
  std::lock_guard lock(mutex_);
  return commit_routes();
}

SysResult<void> KvmVmServices::commit_routes() {
  std::vector<kvm_irq_routing_entry> entries;
  auto route = [&](uint32_t gsi, uint32_t chip, uint32_t pin) {
    kvm_irq_routing_entry e{};
    e.gsi = gsi;
    e.type = KVM_IRQ_ROUTING_IRQCHIP;
    e.u.irqchip.irqchip = chip;
    e.u.irqchip.pin = pin;
    entries.push_back(e);
  };
  for (uint32_t irq = 0; irq < 16; ++irq) {
    if (irq == 2) continue;  // the cascade
    route(irq, irq < 8 ? KVM_IRQCHIP_PIC_MASTER : KVM_IRQCHIP_PIC_SLAVE, irq % 8);
  }
  for (uint32_t gsi = 0; gsi < kLegacyGsis; ++gsi) {
    if (gsi == 2) continue;
    route(gsi, KVM_IRQCHIP_IOAPIC, gsi == 0 ? 2 : gsi);
  }
  for (auto& [gsi, m] : msi_routes_) {
    kvm_irq_routing_entry e{};
    e.gsi = gsi;
    e.type = KVM_IRQ_ROUTING_MSI;
    e.u.msi.address_lo = static_cast<uint32_t>(m.address);
    e.u.msi.address_hi = static_cast<uint32_t>(m.address >> 32);
    e.u.msi.data = m.data;
    entries.push_back(e);
  }
  auto buf = kvm_var_buffer(entries);  // struct kvm_irq_routing (see kvm.h)
  if (auto r = kvm_ioctl(vm_fd_, kKvmSetGsiRouting, "KVM_SET_GSI_ROUTING", buf.data()); !r) {
    return std::unexpected(r.error());
  }
  return {};
}

}  // namespace tern::vmm

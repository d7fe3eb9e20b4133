// KvmVmServices against the real /dev/kvm: the routing table (laid out by
// hand, see vmm/kvm.h) is accepted with the legacy routes and MSIs added,
// changed and removed; ioeventfds register and unregister; vCPUs get the
// filtered CPUID, MSRs, FPU and LAPIC set-up. Runs wherever /dev/kvm exists.
#include "vmm/kvm_services.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cerrno>
#include <vector>

#include "base/event_fd.h"
#include "arch/x86_64/cpu_setup.h"
#include "vmm/emulation_fallback.h"
#include "vmm/kvm.h"
#include "vmm/vcpu.h"
#include "tests/vmm/kvm_vm_fixture.h"

namespace tern::vmm {
namespace {

using KvmServicesTest = KvmVmTest;

TEST_F(KvmServicesTest, RoutesMsisAndLegacyLines) {
  KvmVmServices s(vm_->fd());
  ASSERT_TRUE(s.install_legacy_routes().has_value());
  std::vector<std::unique_ptr<devices::MsiIrq>> irqs;
  for (int i = 0; i < 3; ++i) {
    auto irq = s.create_msi_irq();
    ASSERT_TRUE(irq.has_value()) << irq.error().message();
    irqs.push_back(std::move(*irq));
  }
  for (uint32_t i = 0; i < irqs.size(); ++i) {
    auto r = irqs[i]->set_message(devices::MsiMessage{0xfee00000, 0x40 + i});
    ASSERT_TRUE(r.has_value()) << r.error().message();
  }
  // Reprogram, mask, and trigger: all accepted; a masked vector is a no-op.
  ASSERT_TRUE(irqs[0]->set_message(devices::MsiMessage{0xfee01000, 0x50}).has_value());
  ASSERT_TRUE(irqs[1]->set_message(std::nullopt).has_value());
  irqs[0]->trigger();
  irqs[1]->trigger();
  irqs.clear();  // deassigns the irqfds and drops the routes
  s.set_irq_line(4, true);
  s.set_irq_line(4, false);
}

TEST_F(KvmServicesTest, IoeventfdsRegisterAndUnregister) {
  KvmVmServices s(vm_->fd());
  auto fd = EventFd::create();
  ASSERT_TRUE(fd.has_value());
  ASSERT_TRUE(s.add_ioeventfd(devices::AddressSpace::Mmio, 0xc0003000, 4, fd->fd(), std::nullopt).has_value());
  ASSERT_TRUE(s.add_ioeventfd(devices::AddressSpace::Pio, 0x700, 2, fd->fd(), 7).has_value());
  EXPECT_FALSE(s.add_ioeventfd(devices::AddressSpace::Mmio, 0xc0003000, 4, fd->fd(), std::nullopt).has_value())
      << "the same registration twice is refused";
  ASSERT_TRUE(s.remove_ioeventfd(devices::AddressSpace::Mmio, 0xc0003000, 4, fd->fd(), std::nullopt).has_value());
  ASSERT_TRUE(s.remove_ioeventfd(devices::AddressSpace::Pio, 0x700, 2, fd->fd(), 7).has_value());
}

TEST_F(KvmServicesTest, VcpusAcceptTheBootState) {
  auto cpuid = kvm_->supported_cpuid();
  ASSERT_TRUE(cpuid.has_value()) << cpuid.error().message();
  EXPECT_FALSE(cpuid->empty());
  for (uint32_t i = 0; i < 2; ++i) {
    auto v = Vcpu::create(*kvm_, vm_->fd(), i);
    ASSERT_TRUE(v.has_value()) << v.error().message();
    auto entries = *cpuid;
    arch::x86_64::filter_cpuid(entries, i, 2);
    auto r = (*v)->setup_common(entries);
    ASSERT_TRUE(r.has_value()) << r.error().message();
    r = i == 0 ? (*v)->setup_boot(0x100000) : (*v)->setup_wait_for_sipi();
    ASSERT_TRUE(r.has_value()) << r.error().message();
    EXPECT_NE((*v)->dump_state().find(i == 0 ? "rip=0000000000100000" : "rip="), std::string::npos);
  }
}

// The fallback's event injection on a real vCPU: an event already pending
// injection is kept and the new one refused (EBUSY); otherwise the
// exception, its error code and CR2 reach KVM; and a completion with an
// event pending is deferred with nothing changed.
TEST_F(KvmServicesTest, FallbackInjectionNeverClobbersAPendingEvent) {
  auto v = Vcpu::create(*kvm_, vm_->fd(), 0);
  ASSERT_TRUE(v.has_value()) << v.error().message();
  const int fd = (*v)->fd();
  kvm_vcpu_events ev{};
  ev.interrupt.injected = 1;
  ev.interrupt.nr = 0x30;
  ASSERT_TRUE(kvm_ioctl(fd, KVM_SET_VCPU_EVENTS, "KVM_SET_VCPU_EVENTS", &ev).has_value());

  KvmVcpuFallbackCpu cpu(fd, false);
  auto r = cpu.inject_exception(14, 2u);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().err, EBUSY);
  EXPECT_FALSE(cpu.inject_interrupt(0x80).has_value());
  auto done = complete_failed_instruction(std::vector<uint8_t>{0xcc}, cpu, devices::GuestMemory{});
  ASSERT_TRUE(done.has_value()) << done.error().message();
  EXPECT_TRUE(done->deferred);
  auto now = cpu.get_events();
  ASSERT_TRUE(now.has_value());
  EXPECT_TRUE(now->interrupt.injected);
  EXPECT_EQ(now->interrupt.nr, 0x30);
  EXPECT_FALSE(now->exception.injected);

  ev = {};
  ASSERT_TRUE(kvm_ioctl(fd, KVM_SET_VCPU_EVENTS, "KVM_SET_VCPU_EVENTS", &ev).has_value());
  ASSERT_TRUE(cpu.set_cr2(0xdead000).has_value());
  ASSERT_TRUE(cpu.inject_exception(14, 2u).has_value());
  now = cpu.get_events();
  ASSERT_TRUE(now.has_value());
  EXPECT_TRUE(now->exception.injected);
  EXPECT_EQ(now->exception.nr, 14);
  EXPECT_TRUE(now->exception.has_error_code);
  EXPECT_EQ(now->exception.error_code, 2u);
  auto s = cpu.get_sregs();
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(s->cr2, 0xdead000u);
}

}  // namespace
}  // namespace tern::vmm

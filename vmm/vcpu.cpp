#include "vmm/vcpu.h"

#include <pthread.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

#include <atomic>
#include <cstdio>
#include <cstring>

#include "arch/x86_64/cpu_setup.h"
#include "base/thread_sandbox.h"

namespace tern::vmm {

namespace ax = tern::arch::x86_64;

namespace {

int kick_signal() { return SIGRTMIN; }
void on_kick(int) {}

std::string hex(uint64_t v) {
  char b[24];
  std::snprintf(b, sizeof b, "%016llx", static_cast<unsigned long long>(v));
  return b;
}

}  // namespace

void Vcpu::install_kick_handler() {
  struct sigaction sa{};
  sa.sa_handler = on_kick;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  // no SA_RESTART: KVM_RUN must return EINTR
  sigaction(kick_signal(), &sa, nullptr);
}

SysResult<std::unique_ptr<Vcpu>> Vcpu::create(const Kvm& kvm, int vm_fd, uint32_t index) {
  auto fd = kvm_ioctl(vm_fd, KVM_CREATE_VCPU, "KVM_CREATE_VCPU", static_cast<unsigned long>(index));
  if (!fd) return std::unexpected(fd.error());
  UniqueFd owned(*fd);
  auto size = kvm.vcpu_mmap_size();
  if (!size) return std::unexpected(size.error());
  void* p = ::mmap(nullptr, *size, PROT_READ | PROT_WRITE, MAP_SHARED, owned.get(), 0);
  if (p == MAP_FAILED) return std::unexpected(SysError::from_errno("mmap kvm_run"));
  return std::unique_ptr<Vcpu>(new Vcpu(index, std::move(owned), static_cast<kvm_run*>(p), *size));
}

Vcpu::~Vcpu() {
  stop();
  if (thread_.joinable()) thread_.join();
  ::munmap(run_, run_size_);
}

SysResult<void> Vcpu::setup_common(std::vector<kvm_cpuid_entry2> cpuid) {
  auto cpuid_buf = kvm_var_buffer(cpuid);  // struct kvm_cpuid2 (see kvm.h)
  if (auto r = kvm_ioctl(fd(), kKvmSetCpuid2, "KVM_SET_CPUID2", cpuid_buf.data()); !r) {
    return std::unexpected(r.error());
  }

  std::vector<kvm_msr_entry> msrs;
  for (const auto& m : ax::boot_msrs()) {
    kvm_msr_entry e{};
    e.index = m.index;
    e.data = m.value;
    msrs.push_back(e);
  }
  auto msr_buf = kvm_var_buffer(msrs);  // struct kvm_msrs
  auto set = kvm_ioctl(fd(), kKvmSetMsrs, "KVM_SET_MSRS", msr_buf.data());
  if (!set) return std::unexpected(set.error());
  // KVM_SET_MSRS stops at the first MSR it refuses and returns how many it set.
  if (static_cast<size_t>(*set) != msrs.size()) {
    return std::unexpected(SysError{"KVM_SET_MSRS (MSR refused)", EINVAL});
  }

  kvm_fpu fpu = ax::boot_fpu();
  if (auto r = kvm_ioctl(fd(), KVM_SET_FPU, "KVM_SET_FPU", &fpu); !r) return std::unexpected(r.error());
  auto reachable = probe_mxcsr_reachable(fd());
  if (!reachable) return std::unexpected(reachable.error());
  mxcsr_reachable_ = *reachable;

  kvm_lapic_state lapic{};
  if (auto r = kvm_ioctl(fd(), KVM_GET_LAPIC, "KVM_GET_LAPIC", &lapic); !r) return std::unexpected(r.error());
  ax::setup_lapic_lvt(lapic);
  if (auto r = kvm_ioctl(fd(), KVM_SET_LAPIC, "KVM_SET_LAPIC", &lapic); !r) return std::unexpected(r.error());
  return {};
}

SysResult<void> Vcpu::setup_boot(uint64_t entry) {
  kvm_sregs sregs{};
  if (auto r = kvm_ioctl(fd(), KVM_GET_SREGS, "KVM_GET_SREGS", &sregs); !r) return std::unexpected(r.error());
  ax::setup_long_mode_sregs(sregs);
  if (auto r = kvm_ioctl(fd(), KVM_SET_SREGS, "KVM_SET_SREGS", &sregs); !r) return std::unexpected(r.error());
  kvm_regs regs = ax::boot_regs(entry);
  if (auto r = kvm_ioctl(fd(), KVM_SET_REGS, "KVM_SET_REGS", &regs); !r) return std::unexpected(r.error());
  return {};
}

SysResult<void> Vcpu::setup_wait_for_sipi() {
  kvm_mp_state mp{};
  mp.mp_state = KVM_MP_STATE_UNINITIALIZED;
  if (auto r = kvm_ioctl(fd(), KVM_SET_MP_STATE, "KVM_SET_MP_STATE", &mp); !r) return std::unexpected(r.error());
  return {};
}

void Vcpu::start(VcpuEnv env, VmControl& control) {
  // The vCPU thread: runs this vCPU's KVM_RUN loop until the VM ends or a
  // stop is requested, dispatching its I/O exits to the buses and
  // completing the instructions KVM's emulator gives up on.
  thread_ = start_thread(ThreadKind::Vcpu, [this, env = std::move(env), &control](std::stop_token stop) {
    run_loop(stop, env, control);
  });
}

void Vcpu::stop() {
  if (thread_.joinable()) thread_.request_stop();
}

void Vcpu::request_dump() {
  if (!thread_.joinable()) return;
  dump_requested_.store(true);
  kick();
}

void Vcpu::kick() {
  __atomic_store_n(&run_->immediate_exit, 1, __ATOMIC_SEQ_CST);
  pthread_kill(thread_id_, kick_signal());
}

void Vcpu::run_loop(std::stop_token stop, const VcpuEnv& env, VmControl& control) {
  thread_id_ = pthread_self();
  // Runs in the thread that requests the stop (or here, if already requested).
  std::stop_callback on_stop(stop, [this] { kick(); });
  while (!stop.stop_requested() && !control.finished()) {
    if (::ioctl(fd(), KVM_RUN, 0) < 0) {
      if (errno == EINTR || errno == EAGAIN) {
        if (dump_requested_.exchange(false)) {
          // A dump kick, not a stop: re-arm KVM_RUN. A stop requested
          // meanwhile is seen by the loop condition before the next entry.
          __atomic_store_n(&run_->immediate_exit, 0, __ATOMIC_SEQ_CST);
          std::fprintf(stderr, "tern: vCPU %u (SIGUSR1):\n%s", index_, dump_state().c_str());
        }
        continue;
      }
      control.finish(kExitVmmFailure, "vCPU " + std::to_string(index_) + ": KVM_RUN: " + errno_text(errno));
      return;
    }
    if (!handle_exit(env, control)) return;
  }
}

bool Vcpu::handle_exit(const VcpuEnv& env, VmControl& control) {
  const devices::IoBus& pio = env.pio;
  const devices::IoBus& mmio = env.mmio;
  auto crash = [&](std::string what) {
    control.finish(kExitGuestCrash, "vCPU " + std::to_string(index_) + ": " + what + "\n" + dump_state());
    return false;
  };
  switch (run_->exit_reason) {
    case KVM_EXIT_IO: {
      auto* base = reinterpret_cast<uint8_t*>(run_);
      uint64_t size = run_->io.size, count = run_->io.count, off = run_->io.data_offset;
      if (size == 0 || size > 8 || off + size * count > run_size_) return crash("malformed I/O exit");
      for (uint64_t i = 0; i < count; ++i) {
        uint8_t* p = base + off + i * size;
        if (run_->io.direction == KVM_EXIT_IO_OUT) pio.write(run_->io.port, {p, size});
        else pio.read(run_->io.port, {p, size});
      }
      return true;
    }
    case KVM_EXIT_MMIO: {
      uint32_t len = run_->mmio.len;
      if (len == 0 || len > sizeof run_->mmio.data) return crash("malformed MMIO exit");
      if (run_->mmio.is_write) mmio.write(run_->mmio.phys_addr, {run_->mmio.data, len});
      else mmio.read(run_->mmio.phys_addr, {run_->mmio.data, len});
      return true;
    }
    case KVM_EXIT_INTR:
    case KVM_EXIT_IRQ_WINDOW_OPEN:
      return true;
    case KVM_EXIT_HLT:
      // Only without an in-kernel LAPIC; nothing to wait for here.
      return true;
    case KVM_EXIT_SHUTDOWN:
      // A triple fault: the PC resets.
      control.finish(kExitReset, "vCPU " + std::to_string(index_) + ": triple fault (reset)");
      return false;
    case KVM_EXIT_SYSTEM_EVENT:
      switch (run_->system_event.type) {
        case KVM_SYSTEM_EVENT_SHUTDOWN: control.finish(kExitPowerOff, "system event: shutdown"); return false;
        case KVM_SYSTEM_EVENT_RESET: control.finish(kExitReset, "system event: reset"); return false;
        default: return crash("system event " + std::to_string(run_->system_event.type));
      }
    case KVM_EXIT_INTERNAL_ERROR: {
      if (run_->internal.suberror == KVM_INTERNAL_ERROR_EMULATION) return handle_emulation_failure(env, control);
      std::string what = "KVM internal error, suberror " + std::to_string(run_->internal.suberror);
      if (run_->internal.suberror == KVM_INTERNAL_ERROR_EMULATION) what += " (instruction emulation failed)";
      // Appended in two steps: `" " + hex(...)` inserts at the front of a
      // temporary, which g++ 12 at -O3 misreads as an overlapping memcpy
      // (-Wrestrict, GCC bug 105329).
      for (uint32_t i = 0; i < run_->internal.ndata && i < 16; ++i) what.append(" ").append(hex(run_->internal.data[i]));
      return crash(what);
    }
    case KVM_EXIT_FAIL_ENTRY:
      return crash("VM entry failed, hardware reason " + hex(run_->fail_entry.hardware_entry_failure_reason));
    default:
      return crash("unhandled KVM exit reason " + std::to_string(run_->exit_reason));
  }
}

bool Vcpu::handle_emulation_failure(const VcpuEnv& env, VmControl& control) {
  std::span<const uint8_t> bytes = emulation_failure_bytes(*run_);
  KvmVcpuFallbackCpu cpu(fd(), mxcsr_reachable_);
  auto done = complete_failed_instruction(bytes, cpu, env.memory);
  if (done) {
    env.fallbacks.count(*done);
    return true;
  }
  std::string what = "KVM internal error, suberror " + std::to_string(run_->internal.suberror) +
                     " (instruction emulation failed";
  if (!bytes.empty()) {
    what += "; bytes";
    char b[4];
    for (uint8_t x : bytes) {
      std::snprintf(b, sizeof b, " %02x", x);
      what += b;
    }
  }
  what += "; not completed: " + done.error().message() + ")";
  control.finish(kExitGuestCrash, "vCPU " + std::to_string(index_) + ": " + what + "\n" + dump_state());
  return false;
}

std::string Vcpu::dump_state() const {
  kvm_regs r{};
  kvm_sregs s{};
  std::string out;
  if (!kvm_ioctl(fd(), KVM_GET_REGS, "KVM_GET_REGS", &r) || !kvm_ioctl(fd(), KVM_GET_SREGS, "KVM_GET_SREGS", &s)) {
    return "  (registers unavailable)\n";
  }
  auto line = [&](std::initializer_list<std::pair<const char*, uint64_t>> regs) {
    out += " ";
    for (auto& [n, v] : regs) out += std::string(" ") + n + "=" + hex(v);
    out += "\n";
  };
  line({{"rip", r.rip}, {"rsp", r.rsp}, {"rflags", r.rflags}});
  line({{"rax", r.rax}, {"rbx", r.rbx}, {"rcx", r.rcx}, {"rdx", r.rdx}});
  line({{"rsi", r.rsi}, {"rdi", r.rdi}, {"rbp", r.rbp}, {"r8", r.r8}});
  line({{"r9", r.r9}, {"r10", r.r10}, {"r11", r.r11}, {"r12", r.r12}});
  line({{"r13", r.r13}, {"r14", r.r14}, {"r15", r.r15}});
  line({{"cr0", s.cr0}, {"cr2", s.cr2}, {"cr3", s.cr3}, {"cr4", s.cr4}, {"efer", s.efer}});
  line({{"cs", s.cs.selector}, {"cs.base", s.cs.base}, {"ss", s.ss.selector}, {"ds", s.ds.selector}});
  line({{"gdt", s.gdt.base}, {"idt", s.idt.base}, {"apic_base", s.apic_base}});
  return out;
}

}  // namespace tern::vmm

// Vcpu: one KVM vCPU and the host thread that runs it.
//
// The thread (one std::jthread per vCPU) loops on KVM_RUN over the
// mmapped kvm_run page and dispatches port-I/O and MMIO exits to the buses;
// power, reset and crash exits are reported to the VmControl.
//
// Stopping: request_stop() on the jthread (its destructor does it) runs a
// stop callback that sets kvm_run->immediate_exit and sends the thread the
// kick signal (a no-op handler installed without SA_RESTART). A thread
// inside KVM_RUN leaves it with EINTR; one about to enter it finds
// immediate_exit set and KVM returns EINTR at once; either way the loop
// sees the stop request and ends. Never pthread_cancel.
#pragma once

#include <linux/kvm.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "base/error.h"
#include "base/unique_fd.h"
#include "devices/guest_memory.h"
#include "devices/io_bus.h"
#include "vmm/emulation_fallback.h"
#include "vmm/kvm.h"

namespace tern::vmm {

// What a running vCPU dispatches to: the buses for I/O exits, guest RAM and
// the shared counters for emulation fallbacks, the VmControl for the end.
// All outlive the vCPU threads (the Machine owns them and joins the threads
// first).
struct VcpuEnv {
  const devices::IoBus& pio;
  const devices::IoBus& mmio;
  devices::GuestMemory memory;
  FallbackCounters& fallbacks;
};

// The VM's exit statuses (docs/vmm.md).
inline constexpr int kExitPowerOff = 0;
inline constexpr int kExitVmmFailure = 1;
inline constexpr int kExitReset = 2;
inline constexpr int kExitGuestCrash = 3;
inline constexpr int kExitTimeout = 4;  // --timeout ran out
// The guest's own status through the exit device (port 0x501): 0 stays 0,
// N > 0 becomes kExitGuestStatusBase + N, at most 255, so that it never
// reads as one of tern's own statuses above.
inline constexpr int kExitGuestStatusBase = 32;
constexpr int guest_exit_status(uint8_t n) { return n == 0 ? 0 : (n > 255 - kExitGuestStatusBase ? 255 : kExitGuestStatusBase + n); }

// Where vCPU threads report that the VM is over.
class VmControl {
 public:
  virtual ~VmControl() = default;
  // First call wins; `why` is printed on stderr for crash statuses.
  virtual void finish(int status, std::string why) = 0;
  virtual bool finished() const = 0;
};

class Vcpu {
 public:
  [[nodiscard]] static SysResult<std::unique_ptr<Vcpu>> create(const Kvm& kvm, int vm_fd, uint32_t index);
  ~Vcpu();
  Vcpu(const Vcpu&) = delete;
  Vcpu& operator=(const Vcpu&) = delete;

  uint32_t index() const { return index_; }
  int fd() const { return fd_.get(); }

  // Per-vCPU set-up (every vCPU): CPUID, MSRs, FPU, LAPIC LVTs.
  [[nodiscard]] SysResult<void> setup_common(std::vector<kvm_cpuid_entry2> cpuid);
  // vCPU 0: 64-bit entry at `entry` with RSI = boot_params.
  [[nodiscard]] SysResult<void> setup_boot(uint64_t entry);
  // Application processors: wait for INIT/SIPI (KVM_MP_STATE_UNINITIALIZED,
  // KVM's default for them with an in-kernel LAPIC, stated explicitly).
  [[nodiscard]] SysResult<void> setup_wait_for_sipi();

  // Starts the vCPU thread. APs stay in KVM's wait-for-SIPI state inside
  // KVM_RUN until the BSP wakes them.
  void start(VcpuEnv env, VmControl& control);
  // Asks the thread to leave KVM_RUN and end; join happens in the destructor.
  void stop();
  // Asks the running thread to print this vCPU's registers on stderr at its
  // next exit and go on (SIGUSR1; for a guest that seems stuck).
  void request_dump();

  // Installs the kick signal's handler; once per process, before start().
  static void install_kick_handler();

  // Registers and the exit details, for crash reports.
  std::string dump_state() const;

 private:
  Vcpu(uint32_t index, UniqueFd fd, kvm_run* run, size_t run_size)
      : index_(index), fd_(std::move(fd)), run_(run), run_size_(run_size) {}
  void run_loop(std::stop_token stop, const VcpuEnv& env, VmControl& control);
  // Handles one exit; false when the VM is over.
  bool handle_exit(const VcpuEnv& env, VmControl& control);
  // An emulation failure: completed by the fallback table, or the VM ends.
  bool handle_emulation_failure(const VcpuEnv& env, VmControl& control);
  void kick();

  const uint32_t index_;
  UniqueFd fd_;
  kvm_run* const run_;  // mmapped; fields read by this vCPU's thread only, except immediate_exit
  const size_t run_size_;
  std::atomic<bool> dump_requested_{false};
  bool mxcsr_reachable_ = true;  // set up before the thread starts (probe_mxcsr_reachable)
  pthread_t thread_id_{};  // set by the thread before it can be kicked
  std::jthread thread_;    // last member: stopped and joined first
};

}  // namespace tern::vmm

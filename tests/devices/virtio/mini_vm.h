// MiniVm: a deliberately small KVM machine for the device-level KVM tests.
// It boots the freestanding test guest exactly as docs/vmm.md says tern
// does (64-bit mode, identity map, boot_params at 0x7000 with the command
// line), with the virtio-pci function behind the real PciRoot (type-1
// config ports, BAR placement in the MMIO window), and real ioeventfds and
// MSI irqfds. It exists so that the
// virtio device and the test guest are exercised under KVM independently of
// the full VMM in vmm/; the end-to-end tests in tests/integration/ use
// build/tern itself.
#pragma once

#include <cstdint>
#include <functional>
#include <string_view>
#include <memory>
#include <string>

#include "block/disk.h"
#include "devices/virtio/blk/device.h"

namespace tern::devices::testing {

struct MiniVmResult {
  int exit_code = -1;   // 0 power-off, 2 reset, 3 crash, 124 timeout
  std::string serial;   // everything the guest wrote to COM1
  std::string error;    // host-side failure, empty when the VM ran
};

struct MiniVmOptions {
  std::string kernel;        // the ELF64 test guest
  std::string cmdline;
  uint64_t memory = 128ull << 20;
  // Called for every line the guest prints; returning true stops the VM
  // (exit_code 0), as a host shutdown would.
  std::function<bool(std::string_view)> on_line;
  int timeout_s = 120;  // overridable for debugging via MINI_VM_TIMEOUT
};

// Boots `options.kernel` with `blk` behind virtio-pci and runs it until it
// powers off, resets, crashes or times out.
MiniVmResult run_mini_vm(const MiniVmOptions& options, std::unique_ptr<VirtioBlk> blk);

}  // namespace tern::devices::testing

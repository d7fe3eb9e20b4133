// make_virtio_blk(): the one way a disk becomes a guest device, used by the
// VMM (vmm/machine.cpp) and the tests alike. It checks the options, opens
// the image (block::open_disk), puts a VirtioBlk over it and wraps that in
// the transport asked for: a virtio-pci function (the caller adds it to its
// PciRoot) or a virtio-mmio region at a fixed address and interrupt line
// (the caller maps it on its MMIO bus and describes it to the guest). The
// VirtioBlk pointer, for resize and counters, lives as long as the
// transport object, which owns the device.
#pragma once

#include <cstdint>
#include <expected>
#include <memory>
#include <string>

#include "block/open.h"
#include "devices/guest_memory.h"
#include "devices/virtio/blk/device.h"
#include "devices/virtio/transport/mmio.h"
#include "devices/virtio/transport/pci.h"
#include "devices/vm_services.h"

namespace tern::devices {

// Where a virtio-mmio device sits (ignored for PCI).
struct MmioPlacement {
  uint64_t base = 0;
  uint32_t gsi = 0;
};

struct VirtioBlkDevice {
  std::unique_ptr<VirtioPciDevice> pci;    // VirtioTransport::Pci
  std::unique_ptr<VirtioMmioDevice> mmio;  // VirtioTransport::Mmio
  VirtioBlk* blk = nullptr;                // owned by whichever transport is set
};

struct VirtioBlkSetupError {
  enum class Step { BadOptions, OpenDisk, Transport } step = Step::BadOptions;
  std::string message;  // names the disk and what failed, for the edge
};

// Checks `options` (queue count within what the transport takes, queue size
// a power of two in 2..32768) before anything is opened.
[[nodiscard]] std::expected<void, VirtioBlkSetupError> check_virtio_blk_options(const VirtioBlkOptions& options,
                                                                                 VirtioTransport transport,
                                                                                 const std::string& who);

// Opens the image and builds the device over `disk` when given (tests pass
// an in-memory disk; `open` is then unused).
[[nodiscard]] std::expected<VirtioBlkDevice, VirtioBlkSetupError> make_virtio_blk(
    const block::OpenOptions& open, const VirtioBlkOptions& options, VirtioTransport transport,
    const MmioPlacement& placement, VmServices& vm, const GuestMemory& memory,
    std::unique_ptr<block::DiskFile> disk = nullptr);

}  // namespace tern::devices

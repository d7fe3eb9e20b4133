// make_virtio_blk_pci(): one --disk becomes one virtio-blk PCI function:
// open_disk() with the disk's options, a VirtioBlk over it, the virtio-pci
// transport around that. The VMM adds the returned PciDevice to its PciRoot
// and keeps the VirtioBlk pointer for resize and counters (the transport
// owns the device; the pointer lives as long as the PciDevice).
#pragma once

#include <expected>
#include <memory>
#include <string>

#include "block/open.h"
#include "devices/guest_memory.h"
#include "devices/virtio/virtio_blk.h"
#include "devices/virtio/virtio_pci.h"
#include "devices/vm_services.h"

namespace tern::devices {

struct VirtioBlkPci {
  std::unique_ptr<VirtioPciDevice> pci;
  VirtioBlk* blk = nullptr;  // owned by `pci`
};

struct VirtioBlkSetupError {
  enum class Step { BadOptions, OpenDisk, Transport } step = Step::BadOptions;
  std::string message;  // names the disk and what failed, for the edge
};

[[nodiscard]] std::expected<VirtioBlkPci, VirtioBlkSetupError> make_virtio_blk_pci(
    const block::OpenOptions& open, const VirtioBlkOptions& options, VmServices& vm,
    const GuestMemory& memory);

}  // namespace tern::devices

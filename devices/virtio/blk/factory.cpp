#include "devices/virtio/blk/factory.h"

#include <bit>

namespace tern::devices {

using Step = VirtioBlkSetupError::Step;

std::expected<void, VirtioBlkSetupError> check_virtio_blk_options(const VirtioBlkOptions& options,
                                                                   VirtioTransport transport,
                                                                   const std::string& who) {
  uint16_t max = transport == VirtioTransport::Pci ? kVirtioPciMaxQueues : kVirtioMmioMaxQueues;
  if (options.num_queues == 0 || options.num_queues > max) {
    return std::unexpected(
        VirtioBlkSetupError{Step::BadOptions, who + ": num_queues must be 1.." + std::to_string(max)});
  }
  // 2.7: a split virtqueue's size is a power of two, at most 32768.
  if (options.queue_size < 2 || options.queue_size > kMaxQueueSize || !std::has_single_bit(options.queue_size)) {
    return std::unexpected(VirtioBlkSetupError{Step::BadOptions, who + ": queue_size must be a power of two in 2..32768"});
  }
  return {};
}

std::expected<VirtioBlkDevice, VirtioBlkSetupError> make_virtio_blk(
    const block::OpenOptions& open, const VirtioBlkOptions& options, VirtioTransport transport,
    const MmioPlacement& placement, VmServices& vm, const GuestMemory& memory,
    std::unique_ptr<block::DiskFile> disk) {
  std::string id = options.id.empty() ? open.path : options.id;
  std::string who = "disk " + id;
  if (auto ok = check_virtio_blk_options(options, transport, who); !ok) return std::unexpected(ok.error());
  if (!disk) {
    auto opened = block::open_disk(open);
    if (!opened) return std::unexpected(VirtioBlkSetupError{Step::OpenDisk, who + ": " + opened.error().message()});
    disk = std::move(*opened);
  }
  auto blk = std::make_unique<VirtioBlk>(std::move(disk), options);
  VirtioBlkDevice out;
  out.blk = blk.get();
  std::string name = "virtio-blk " + id;
  if (transport == VirtioTransport::Pci) {
    auto pci = VirtioPciDevice::create(std::move(blk), vm, memory, name);
    if (!pci) return std::unexpected(VirtioBlkSetupError{Step::Transport, who + ": virtio-pci: " + pci.error().message()});
    out.pci = std::move(*pci);
  } else {
    auto mmio = VirtioMmioDevice::create(std::move(blk), vm, memory, name, placement.base, placement.gsi);
    if (!mmio) {
      return std::unexpected(VirtioBlkSetupError{Step::Transport, who + ": virtio-mmio: " + mmio.error().message()});
    }
    out.mmio = std::move(*mmio);
  }
  return out;
}

}  // namespace tern::devices

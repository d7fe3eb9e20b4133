#include "devices/virtio/virtio_blk_pci.h"

#include <bit>

namespace tern::devices {

std::expected<VirtioBlkPci, VirtioBlkSetupError> make_virtio_blk_pci(
    const block::OpenOptions& open, const VirtioBlkOptions& options, VmServices& vm,
    const GuestMemory& memory) {
  using Step = VirtioBlkSetupError::Step;
  std::string who = "disk " + (options.id.empty() ? open.path : options.id);
  if (options.num_queues == 0 || options.num_queues > kVirtioPciMaxQueues) {
    return std::unexpected(VirtioBlkSetupError{
        Step::BadOptions, who + ": num_queues must be 1.." + std::to_string(kVirtioPciMaxQueues)});
  }
  // 2.7: a split virtqueue's size is a power of two, at most 32768.
  if (options.queue_size < 2 || options.queue_size > kMaxQueueSize ||
      !std::has_single_bit(options.queue_size)) {
    return std::unexpected(VirtioBlkSetupError{
        Step::BadOptions, who + ": queue_size must be a power of two in 2..32768"});
  }
  auto disk = block::open_disk(open);
  if (!disk) return std::unexpected(VirtioBlkSetupError{Step::OpenDisk, who + ": " + disk.error().message()});
  auto blk = std::make_unique<VirtioBlk>(std::move(*disk), options);
  VirtioBlk* raw = blk.get();
  auto pci = VirtioPciDevice::create(std::move(blk), vm, memory, "virtio-blk " + (options.id.empty() ? open.path : options.id));
  if (!pci) return std::unexpected(VirtioBlkSetupError{Step::Transport, who + ": " + pci.error().message()});
  return VirtioBlkPci{std::move(*pci), raw};
}

}  // namespace tern::devices

#include "devices/pci/pci_root.h"

#include <algorithm>
#include <cstring>
#include <mutex>

namespace tern::devices {
namespace {

constexpr uint32_t kBar0 = 0x10;
constexpr uint32_t kBarEnd = 0x28;
constexpr uint16_t kCommandMemory = 1 << 1;
// Type-1 CONFIG_ADDRESS: enable (31), bus (23:16), device (15:11),
// function (10:8), register (7:2) -- PCI Local Bus 3.0, 3.2.2.3.2.
constexpr uint32_t kType1Enable = 1u << 31;

uint32_t load_le(std::span<const uint8_t> data) {
  uint32_t v = 0;
  for (size_t i = 0; i < data.size() && i < 4; ++i) v |= uint32_t{data[i]} << (8 * i);
  return v;
}

void store_le(uint32_t value, std::span<uint8_t> data) {
  for (size_t i = 0; i < data.size() && i < 4; ++i) data[i] = static_cast<uint8_t>(value >> (8 * i));
}

bool valid_access(uint32_t offset, size_t len) {
  return (len == 1 || len == 2 || len == 4) && offset < 4096 && len <= 4096 - offset &&
         offset % len == 0;
}

}  // namespace

const char* pci_error_text(PciError error) {
  switch (error) {
    case PciError::BusFull: return "PCI bus 0 has no free slot";
    case PciError::BadBar: return "device declares an invalid BAR";
    case PciError::WindowFull: return "PCI MMIO window is full";
  }
  return "PCI error";
}

PciRoot::PciRoot(uint64_t window_base, uint64_t window_size)
    : window_base_(window_base), window_size_(window_size) {}

PciRoot::~PciRoot() = default;

std::expected<uint8_t, PciError> PciRoot::add_device(std::unique_ptr<PciDevice> device) {
  std::unique_lock lock(mutex_);
  uint8_t slot_no = 1;  // 0 is the host bridge
  while (slot_no < slots_.size() && slots_[slot_no].device) ++slot_no;
  if (slot_no >= slots_.size()) return std::unexpected(PciError::BusFull);

  Slot slot;
  uint64_t cursor = next_bar_;
  for (const PciBarInfo& info : device->bars()) {
    bool pow2 = info.size != 0 && (info.size & (info.size - 1)) == 0;
    unsigned regs = info.is_64bit ? 2 : 1;
    if (!pow2 || info.size < 4096 || info.index + regs > 6 || slot.bars[info.index].valid ||
        (info.is_64bit && slot.bars[info.index + 1].valid) || (!info.is_64bit && info.size > (1ull << 31))) {
      return std::unexpected(PciError::BadBar);
    }
    cursor = (cursor + info.size - 1) & ~(info.size - 1);  // natural alignment
    if (cursor > window_size_ || info.size > window_size_ - cursor) {
      return std::unexpected(PciError::WindowFull);
    }
    Bar& bar = slot.bars[info.index];
    bar.info = info;
    bar.address = window_base_ + cursor;
    bar.valid = true;
    cursor += info.size;
  }
  next_bar_ = cursor;
  slot.device = std::move(device);
  slots_[slot_no] = std::move(slot);
  // Firmware-style placement: the guest finds its BARs already assigned
  // inside the host bridge's window (described in the DSDT's _CRS).
  for (Bar& bar : slots_[slot_no].bars) {
    if (!bar.valid) continue;
    bar.placed = bar.address;
    slots_[slot_no].device->bar_placed(bar.info.index, bar.address);
  }
  return slot_no;
}

PciDevice* PciRoot::device(uint8_t slot) const {
  std::shared_lock lock(mutex_);
  return slot < slots_.size() ? slots_[slot].device.get() : nullptr;
}

uint32_t PciRoot::bar_register(const Slot& slot, unsigned reg) const {
  const Bar& bar = slot.bars[reg];
  if (bar.valid) {
    uint32_t flags = (bar.info.is_64bit ? 0x4u : 0u) | (bar.info.prefetchable ? 0x8u : 0u);
    return (static_cast<uint32_t>(bar.address) & ~0xfu) | flags;
  }
  if (reg > 0 && slot.bars[reg - 1].valid && slot.bars[reg - 1].info.is_64bit) {
    return static_cast<uint32_t>(slot.bars[reg - 1].address >> 32);
  }
  return 0;  // unimplemented BAR: hardwired to zero
}

void PciRoot::write_bar_register(Slot& slot, unsigned reg, uint32_t value) {
  // The size is encoded by the address bits that stay zero (PCI 3.0,
  // 6.2.5.1): writing all-ones reads back ~(size - 1).
  if (slot.bars[reg].valid) {
    Bar& bar = slot.bars[reg];
    uint64_t mask = ~(bar.info.size - 1) & 0xffff'fff0ull;
    bar.address = (bar.address & ~0xffff'ffffull) | (value & mask);
  } else if (reg > 0 && slot.bars[reg - 1].valid && slot.bars[reg - 1].info.is_64bit) {
    Bar& bar = slot.bars[reg - 1];
    uint64_t high_mask = (~(bar.info.size - 1)) >> 32;
    bar.address = (bar.address & 0xffff'ffffull) | ((uint64_t{value} & high_mask) << 32);
  }
}

void PciRoot::update_placement(Slot& slot) {
  if (!slot.memory_enabled) return;
  for (Bar& bar : slot.bars) {
    if (!bar.valid || bar.address == bar.placed) continue;
    bar.placed = bar.address;
    slot.device->bar_placed(bar.info.index, bar.address);
  }
}

void PciRoot::host_bridge_read(uint32_t offset, std::span<uint8_t> data) const {
  std::array<uint8_t, 64> header{};
  auto put16 = [&](size_t at, uint16_t v) {
    header[at] = static_cast<uint8_t>(v);
    header[at + 1] = static_cast<uint8_t>(v >> 8);
  };
  put16(0x00, 0x8086);  // vendor: Intel
  put16(0x02, 0x0d57);  // device: a generic host bridge id
  put16(0x04, 0x0006);  // command: memory, bus master
  header[0x0b] = 0x06;  // class: bridge
  header[0x0a] = 0x00;  // subclass: host bridge
  std::fill(data.begin(), data.end(), 0);
  for (size_t i = 0; i < data.size(); ++i) {
    if (offset + i < header.size()) data[i] = header[offset + i];
  }
}

void PciRoot::config_read(uint8_t slot_no, uint8_t function, uint32_t offset,
                          std::span<uint8_t> data) {
  std::fill(data.begin(), data.end(), 0xff);
  if (!valid_access(offset, data.size()) || slot_no >= slots_.size() || function != 0) return;
  if (slot_no == 0) {
    host_bridge_read(offset, data);
    return;
  }
  std::shared_lock lock(mutex_);
  Slot& slot = slots_[slot_no];
  if (!slot.device) return;  // absent function: all-ones
  if (offset >= kBar0 && offset < kBarEnd) {
    unsigned reg = (offset - kBar0) / 4;
    uint32_t value = bar_register(slot, reg) >> (8 * (offset % 4));
    store_le(value, data);
    return;
  }
  slot.device->config_read(offset, data);
}

void PciRoot::config_write(uint8_t slot_no, uint8_t function, uint32_t offset,
                           std::span<const uint8_t> data) {
  if (!valid_access(offset, data.size()) || slot_no == 0 || slot_no >= slots_.size() ||
      function != 0) {
    return;  // host bridge registers are read-only; absent functions ignore writes
  }
  std::unique_lock lock(mutex_);
  Slot& slot = slots_[slot_no];
  if (!slot.device) return;
  if (offset >= kBar0 && offset < kBarEnd) {
    unsigned reg = (offset - kBar0) / 4;
    unsigned shift = 8 * (offset % 4);
    uint32_t width_mask = data.size() == 4 ? 0xffff'ffffu : ((1u << (8 * data.size())) - 1) << shift;
    uint32_t old = bar_register(slot, reg);
    uint32_t merged = (old & ~width_mask) | ((load_le(data) << shift) & width_mask);
    write_bar_register(slot, reg, merged);
    update_placement(slot);
    return;
  }
  slot.device->config_write(offset, data);
  if (offset < 6 && offset + data.size() > 4) {
    // Memory decoding follows the command register the device keeps.
    std::array<uint8_t, 2> command{};
    slot.device->config_read(4, command);
    slot.memory_enabled = (command[0] & kCommandMemory) != 0;
    update_placement(slot);
  }
}

const PciRoot::Slot* PciRoot::route(uint64_t gpa, uint64_t len, uint8_t& bar_index,
                                    uint64_t& offset) const {
  for (const Slot& slot : slots_) {
    if (!slot.device || !slot.memory_enabled) continue;
    for (const Bar& bar : slot.bars) {
      if (!bar.valid || gpa < bar.address) continue;
      uint64_t off = gpa - bar.address;
      if (off >= bar.info.size || len > bar.info.size - off) continue;
      bar_index = bar.info.index;
      offset = off;
      return &slot;
    }
  }
  return nullptr;
}

// ---- type-1 configuration mechanism ----

// The function and register a data-port access at `offset` (4..7) selects
// through CONFIG_ADDRESS, or nullopt when disabled, on another bus, or out
// of the data port.
std::optional<PciRoot::Type1Target> PciRoot::Type1Handler::target(uint64_t offset, size_t len) const {
  if (offset < 4 || offset + len > 8) return std::nullopt;
  uint32_t address;
  {
    std::shared_lock lock(root_.mutex_);
    address = root_.type1_address_;
  }
  if (!(address & kType1Enable) || ((address >> 16) & 0xff) != 0) return std::nullopt;
  return Type1Target{static_cast<uint8_t>((address >> 11) & 0x1f), static_cast<uint8_t>((address >> 8) & 0x7),
                     (address & 0xfc) + static_cast<uint32_t>(offset - 4)};
}

void PciRoot::Type1Handler::read(uint64_t offset, std::span<uint8_t> data) {
  std::fill(data.begin(), data.end(), 0xff);
  if (offset == 0 && data.size() == 4) {
    std::shared_lock lock(root_.mutex_);
    store_le(root_.type1_address_, data);
    return;
  }
  if (auto t = target(offset, data.size())) root_.config_read(t->slot, t->function, t->reg, data);
}

void PciRoot::Type1Handler::write(uint64_t offset, std::span<const uint8_t> data) {
  if (offset == 0 && data.size() == 4) {
    std::unique_lock lock(root_.mutex_);
    root_.type1_address_ = load_le(data) & 0x80ff'fffcu;
    return;
  }
  if (auto t = target(offset, data.size())) root_.config_write(t->slot, t->function, t->reg, data);
}

// ---- ECAM (PCI Express 3.0, 7.2.2): 4 KiB per function, bus 0 only ----

void PciRoot::EcamHandler::read(uint64_t offset, std::span<uint8_t> data) {
  std::fill(data.begin(), data.end(), 0xff);
  if (offset >= kEcamBusSize) return;
  root_.config_read(static_cast<uint8_t>((offset >> 15) & 0x1f), static_cast<uint8_t>((offset >> 12) & 7),
                    static_cast<uint32_t>(offset & 0xfff), data);
}

void PciRoot::EcamHandler::write(uint64_t offset, std::span<const uint8_t> data) {
  if (offset >= kEcamBusSize) return;
  root_.config_write(static_cast<uint8_t>((offset >> 15) & 0x1f), static_cast<uint8_t>((offset >> 12) & 7),
                     static_cast<uint32_t>(offset & 0xfff), data);
}

// ---- BAR accesses in the MMIO window ----

void PciRoot::MmioHandler::read(uint64_t offset, std::span<uint8_t> data) {
  std::shared_lock lock(root_.mutex_);
  uint8_t bar = 0;
  uint64_t bar_offset = 0;
  const Slot* slot = root_.route(root_.window_base_ + offset, data.size(), bar, bar_offset);
  if (!slot) {
    std::fill(data.begin(), data.end(), 0xff);  // master abort
    return;
  }
  slot->device->bar_read(bar, bar_offset, data);
}

void PciRoot::MmioHandler::write(uint64_t offset, std::span<const uint8_t> data) {
  std::shared_lock lock(root_.mutex_);
  uint8_t bar = 0;
  uint64_t bar_offset = 0;
  const Slot* slot = root_.route(root_.window_base_ + offset, data.size(), bar, bar_offset);
  if (slot) slot->device->bar_write(bar, bar_offset, data);
}

}  // namespace tern::devices

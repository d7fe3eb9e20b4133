#include "devices/pci/msix.h"

#include <algorithm>
#include <cstring>

namespace tern::devices {

SysResult<std::unique_ptr<MsixTable>> MsixTable::create(VmServices& vm, uint16_t vectors,
                                                        std::function<void(const std::string&)> on_error) {
  auto t = std::unique_ptr<MsixTable>(new MsixTable(vectors, std::move(on_error)));
  for (uint16_t v = 0; v < vectors; ++v) {
    auto irq = vm.create_msi_irq();
    if (!irq) return std::unexpected(irq.error());
    t->irqs_.push_back(std::move(*irq));
  }
  return t;
}

MsixTable::MsixTable(uint16_t vectors, std::function<void(const std::string&)> on_error)
    : vectors_(vectors), on_error_(std::move(on_error)), table_(vectors), pending_(vectors, false),
      dirty_(vectors, true) {}

void MsixTable::set_control(uint16_t control) {
  std::lock_guard lock(mutex_);
  enabled_ = (control & kMsixEnable) != 0;
  function_masked_ = (control & kMsixFunctionMask) != 0;
  deliver_unmasked_pending();
}

void MsixTable::deliver(uint16_t vector) {
  std::lock_guard lock(mutex_);
  if (vector >= vectors_ || !enabled_) return;  // no INTx fallback
  if (function_masked_ || (table_[vector].control & 1)) {
    pending_[vector] = true;  // PBA; delivered on unmask
    return;
  }
  fire(vector);
}

void MsixTable::clear_pending() {
  std::lock_guard lock(mutex_);
  std::fill(pending_.begin(), pending_.end(), false);
}

void MsixTable::fire(uint16_t vector) {
  if (dirty_[vector]) {
    const Entry& e = table_[vector];
    MsiMessage m{.address = (uint64_t{e.addr_hi} << 32) | e.addr_lo, .data = e.data};
    if (auto r = irqs_[vector]->set_message(m); !r) {
      if (on_error_) on_error_("cannot program MSI-X vector: " + r.error().message());
      return;
    }
    dirty_[vector] = false;
  }
  irqs_[vector]->trigger();
}

void MsixTable::deliver_unmasked_pending() {
  if (!enabled_ || function_masked_) return;
  for (uint16_t v = 0; v < vectors_; ++v) {
    if (pending_[v] && !(table_[v].control & 1)) {
      pending_[v] = false;
      fire(v);
    }
  }
}

void MsixTable::pba_read(uint64_t offset, std::span<uint8_t> data) {
  std::lock_guard lock(mutex_);
  for (size_t i = 0; i < data.size(); ++i) {
    uint8_t bits = 0;
    for (unsigned b = 0; b < 8; ++b) {
      uint64_t v = (offset + i) * 8 + b;
      if (v < vectors_ && pending_[v]) bits = static_cast<uint8_t>(bits | (1u << b));
    }
    data[i] = bits;
  }
}

void MsixTable::table_read(uint64_t offset, std::span<uint8_t> data) {
  std::fill(data.begin(), data.end(), 0);
  std::lock_guard lock(mutex_);
  uint64_t index = offset / kMsixEntrySize;
  if (index >= vectors_ || offset % kMsixEntrySize + data.size() > kMsixEntrySize) return;
  const Entry& e = table_[index];
  uint32_t words[4] = {e.addr_lo, e.addr_hi, e.data, e.control};
  std::memcpy(data.data(), reinterpret_cast<const uint8_t*>(words) + offset % kMsixEntrySize, data.size());
}

void MsixTable::table_write(uint64_t offset, std::span<const uint8_t> data) {
  std::lock_guard lock(mutex_);
  uint64_t index = offset / kMsixEntrySize;
  if (index >= vectors_ || offset % kMsixEntrySize + data.size() > kMsixEntrySize) return;
  Entry& e = table_[index];
  uint32_t words[4] = {e.addr_lo, e.addr_hi, e.data, e.control};
  std::memcpy(reinterpret_cast<uint8_t*>(words) + offset % kMsixEntrySize, data.data(), data.size());
  if (words[0] != e.addr_lo || words[1] != e.addr_hi || words[2] != e.data) dirty_[index] = true;
  bool was_masked = e.control & 1;
  e = Entry{words[0], words[1], words[2], words[3] & 1};
  if (was_masked && !(e.control & 1) && pending_[index] && enabled_ && !function_masked_) {
    pending_[index] = false;
    fire(static_cast<uint16_t>(index));
  }
}

}  // namespace tern::devices

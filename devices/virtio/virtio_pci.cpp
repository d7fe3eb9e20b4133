#include "devices/virtio/virtio_pci.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>

namespace tern::devices {

namespace {

// Capability types (4.1.4).
constexpr uint8_t kCapCommonCfg = 1;
constexpr uint8_t kCapNotifyCfg = 2;
constexpr uint8_t kCapIsrCfg = 3;
constexpr uint8_t kCapDeviceCfg = 4;
constexpr uint8_t kCapPciCfg = 5;
constexpr uint8_t kPciCapVendor = 0x09;
constexpr uint8_t kPciCapMsix = 0x11;
constexpr uint16_t kMsixEnable = 0x8000;
constexpr uint16_t kMsixFunctionMask = 0x4000;

// Common configuration field offsets (4.1.4.3).
constexpr uint64_t kDeviceFeatureSelect = 0x00;
constexpr uint64_t kDeviceFeature = 0x04;
constexpr uint64_t kDriverFeatureSelect = 0x08;
constexpr uint64_t kDriverFeature = 0x0c;
constexpr uint64_t kConfigMsixVector = 0x10;
constexpr uint64_t kNumQueues = 0x12;
constexpr uint64_t kDeviceStatus = 0x14;
constexpr uint64_t kConfigGeneration = 0x15;
constexpr uint64_t kQueueSelect = 0x16;
constexpr uint64_t kQueueSize = 0x18;
constexpr uint64_t kQueueMsixVector = 0x1a;
constexpr uint64_t kQueueEnable = 0x1c;
constexpr uint64_t kQueueNotifyOff = 0x1e;
constexpr uint64_t kQueueDesc = 0x20;
constexpr uint64_t kQueueDriver = 0x28;
constexpr uint64_t kQueueDevice = 0x30;

template <class T>
void put(uint8_t* base, size_t at, T value) {
  std::memcpy(base + at, &value, sizeof value);
}
template <class T>
T get(const uint8_t* base, size_t at) {
  T v;
  std::memcpy(&v, base + at, sizeof v);
  return v;
}

bool touches(uint64_t offset, size_t len, uint64_t field, size_t field_len) {
  return offset < field + field_len && field < offset + len;
}

}  // namespace

SysResult<std::unique_ptr<VirtioPciDevice>> VirtioPciDevice::create(
    std::unique_ptr<VirtioDevice> device, VmServices& vm, const GuestMemory& memory,
    std::string name) {
  if (device->num_queues() == 0 || device->num_queues() > kVirtioPciMaxQueues) {
    return std::unexpected(SysError{"virtio-pci queue count", EINVAL});
  }
  auto d = std::unique_ptr<VirtioPciDevice>(
      new VirtioPciDevice(std::move(device), vm, memory, std::move(name)));
  for (uint16_t q = 0; q < d->num_queues_; ++q) {
    auto fd = EventFd::create();
    if (!fd) return std::unexpected(fd.error());
    d->notify_.push_back(std::move(*fd));
  }
  for (uint16_t v = 0; v < d->num_vectors_; ++v) {
    auto irq = vm.create_msi_irq();
    if (!irq) return std::unexpected(irq.error());
    d->irqs_.push_back(std::move(*irq));
  }
  return d;
}

VirtioPciDevice::VirtioPciDevice(std::unique_ptr<VirtioDevice> device, VmServices& vm,
                                 const GuestMemory& memory, std::string name)
    : device_(std::move(device)),
      vm_(vm),
      memory_(memory),
      name_(std::move(name)),
      num_queues_(device_->num_queues()),
      num_vectors_(static_cast<uint16_t>(device_->num_queues() + 1)),
      queues_(num_queues_),
      queue_vectors_(new std::atomic<uint16_t>[num_queues_]),
      msix_table_(num_vectors_),
      msix_pending_(num_vectors_, false),
      msix_dirty_(num_vectors_, true) {
  for (uint16_t q = 0; q < num_queues_; ++q) {
    queue_vectors_[q].store(kVirtioNoVector);
    queues_[q].size = device_->max_queue_size();
  }
  build_config_space();
}

VirtioPciDevice::~VirtioPciDevice() {
  device_->reset();  // stop the queue threads before the interrupt goes away
  std::lock_guard lock(mutex_);
  unregister_ioeventfds();
}

void VirtioPciDevice::build_config_space() {
  uint8_t* c = config_.data();
  // Type-0 header (4.1.2: vendor 0x1af4, device 0x1040 + type, revision 1).
  put<uint16_t>(c, 0x00, 0x1af4);
  put<uint16_t>(c, 0x02, static_cast<uint16_t>(0x1040 + device_->device_id()));
  put<uint16_t>(c, 0x06, 0x0010);  // status: capability list
  c[0x08] = 1;                     // revision
  put<uint16_t>(c, 0x0a, 0x0180);  // class: mass storage, other
  c[0x09] = 0x00;
  put<uint16_t>(c, 0x2c, 0x1af4);  // subsystem vendor
  put<uint16_t>(c, 0x2e, static_cast<uint16_t>(device_->device_id()));
  c[0x34] = 0x40;  // capabilities pointer
  put<uint16_t>(wmask_.data(), 0x04, 0x0407);  // command: io, memory, bus master, INTx disable
  wmask_[0x3c] = 0xff;                          // interrupt line

  uint8_t at = 0x40;
  auto vendor_cap = [&](uint8_t type, uint8_t len, uint32_t offset, uint32_t length) {
    uint8_t here = at;
    c[here] = kPciCapVendor;
    c[here + 1] = static_cast<uint8_t>(here + len);  // next, fixed below for the last
    c[here + 2] = len;
    c[here + 3] = type;
    c[here + 4] = 0;  // BAR 0
    put<uint32_t>(c, here + 8, offset);
    put<uint32_t>(c, here + 12, length);
    at = static_cast<uint8_t>(at + len);
    return here;
  };
  vendor_cap(kCapCommonCfg, 16, kCommonCfgOffset, kCommonCfgSize);
  uint8_t notify = vendor_cap(kCapNotifyCfg, 20, kNotifyOffset, kNotifyOffMultiplier * num_queues_);
  put<uint32_t>(c, notify + 16, kNotifyOffMultiplier);
  vendor_cap(kCapIsrCfg, 16, kIsrOffset, 4);
  vendor_cap(kCapDeviceCfg, 16, kDeviceCfgOffset, kDeviceCfgSize);
  // 4.1.4.9: the PCI configuration access window; bar, offset, length and
  // data are driver-writable.
  pci_cfg_cap_ = vendor_cap(kCapPciCfg, 20, 0, 0);
  wmask_[pci_cfg_cap_ + 4] = 0xff;
  for (int i = 8; i < 20; ++i) wmask_[pci_cfg_cap_ + i] = 0xff;

  msix_cap_ = at;
  c[msix_cap_] = kPciCapMsix;
  c[msix_cap_ + 1] = 0;  // end of list
  put<uint16_t>(c, msix_cap_ + 2, static_cast<uint16_t>(num_vectors_ - 1));
  put<uint32_t>(c, msix_cap_ + 4, static_cast<uint32_t>(kMsixTableOffset));  // BIR 0
  put<uint32_t>(c, msix_cap_ + 8, static_cast<uint32_t>(kMsixPbaOffset));    // BIR 0
  put<uint16_t>(wmask_.data(), msix_cap_ + 2, kMsixEnable | kMsixFunctionMask);
}

std::vector<PciBarInfo> VirtioPciDevice::bars() const {
  return {PciBarInfo{.index = 0, .size = kVirtioBarSize, .is_64bit = true, .prefetchable = false}};
}

uint8_t VirtioPciDevice::device_status() const {
  std::lock_guard lock(mutex_);
  return static_cast<uint8_t>(status_ | (needs_reset_.load() ? kStatusNeedsReset : 0));
}

// ---- configuration space ----

bool VirtioPciDevice::pci_cfg_window(uint32_t offset, size_t len, uint8_t& bar,
                                     uint32_t& bar_offset, uint32_t& length) const {
  uint32_t data_at = pci_cfg_cap_ + 16u;
  if (!touches(offset, len, data_at, 4)) return false;
  bar = config_[pci_cfg_cap_ + 4];
  bar_offset = get<uint32_t>(config_.data(), pci_cfg_cap_ + 8);
  length = get<uint32_t>(config_.data(), pci_cfg_cap_ + 12);
  return true;
}

void VirtioPciDevice::config_read(uint32_t offset, std::span<uint8_t> data) {
  if (offset >= config_.size() || data.size() > config_.size() - offset) {
    std::fill(data.begin(), data.end(), 0xff);
    return;
  }
  uint8_t bar = 0;
  uint32_t bar_offset = 0, length = 0;
  bool window;
  {
    std::lock_guard lock(mutex_);
    std::memcpy(data.data(), config_.data() + offset, data.size());
    window = pci_cfg_window(offset, data.size(), bar, bar_offset, length);
  }
  // 4.1.4.9.1: a read of pci_cfg_data reads `length` bytes of BAR `bar`.
  if (window && offset == pci_cfg_cap_ + 16u && (length == 1 || length == 2 || length == 4) &&
      data.size() >= length) {
    std::array<uint8_t, 4> buf{};
    bar_read(bar, bar_offset, std::span<uint8_t>(buf.data(), length));
    std::memcpy(data.data(), buf.data(), length);
  }
}

void VirtioPciDevice::config_write(uint32_t offset, std::span<const uint8_t> data) {
  if (offset >= config_.size() || data.size() > config_.size() - offset) return;
  uint8_t bar = 0;
  uint32_t bar_offset = 0, length = 0;
  bool window;
  {
    std::lock_guard lock(mutex_);
    for (size_t i = 0; i < data.size(); ++i) {
      uint8_t m = wmask_[offset + i];
      config_[offset + i] = static_cast<uint8_t>((config_[offset + i] & ~m) | (data[i] & m));
    }
    if (touches(offset, data.size(), msix_cap_ + 2u, 2)) sync_msix_control();
    window = pci_cfg_window(offset, data.size(), bar, bar_offset, length);
  }
  if (window && offset == pci_cfg_cap_ + 16u && (length == 1 || length == 2 || length == 4) &&
      data.size() >= length) {
    bar_write(bar, bar_offset, data.first(length));
  }
}

void VirtioPciDevice::sync_msix_control() {
  uint16_t control = get<uint16_t>(config_.data(), msix_cap_ + 2u);
  std::lock_guard lock(msix_mutex_);
  msix_enabled_ = (control & kMsixEnable) != 0;
  msix_function_masked_ = (control & kMsixFunctionMask) != 0;
  deliver_unmasked_pending();
}

// ---- BAR 0 ----

void VirtioPciDevice::bar_read(uint8_t bar, uint64_t offset, std::span<uint8_t> data) {
  std::fill(data.begin(), data.end(), 0);
  if (bar != 0 || offset >= kVirtioBarSize || data.size() > kVirtioBarSize - offset) return;
  if (offset < kCommonCfgOffset + kCommonCfgSize) {
    if (data.size() <= kCommonCfgSize - offset) common_read(offset, data);
  } else if (offset >= kIsrOffset && offset < kIsrOffset + 4) {
    // 4.1.4.5: reading the ISR status clears it.
    if (offset == kIsrOffset) data[0] = isr_.exchange(0);
  } else if (offset >= kDeviceCfgOffset && offset < kDeviceCfgOffset + kDeviceCfgSize) {
    device_->read_config(static_cast<uint32_t>(offset - kDeviceCfgOffset), data);
  } else if (offset >= kMsixTableOffset && offset < kMsixPbaOffset + 0x1000) {
    msix_read(offset, data);
  }
}

void VirtioPciDevice::bar_write(uint8_t bar, uint64_t offset, std::span<const uint8_t> data) {
  if (bar != 0 || offset >= kVirtioBarSize || data.size() > kVirtioBarSize - offset) return;
  if (offset < kCommonCfgOffset + kCommonCfgSize) {
    if (data.size() <= kCommonCfgSize - offset) common_write(offset, data);
  } else if (offset >= kDeviceCfgOffset && offset < kDeviceCfgOffset + kDeviceCfgSize) {
    device_->write_config(static_cast<uint32_t>(offset - kDeviceCfgOffset), data);
  } else if (offset >= kNotifyOffset &&
             offset < kNotifyOffset + uint64_t{kNotifyOffMultiplier} * num_queues_) {
    // A notification that did not go through the ioeventfd (before the BAR
    // was placed, or a width the ioeventfd does not match).
    notify_[(offset - kNotifyOffset) / kNotifyOffMultiplier].signal();
  } else if (offset >= kMsixTableOffset && offset < kMsixPbaOffset + 0x1000) {
    msix_write(offset, data);
  }
}

void VirtioPciDevice::bar_placed(uint8_t bar, uint64_t gpa) {
  if (bar != 0) return;
  std::lock_guard lock(mutex_);
  unregister_ioeventfds();
  bar_gpa_ = gpa;
  register_ioeventfds(gpa);
}

void VirtioPciDevice::register_ioeventfds(uint64_t bar_gpa) {
  // Linux writes the queue index as 16 bits (vp_notify: iowrite16).
  for (uint16_t q = 0; q < num_queues_; ++q) {
    uint64_t addr = bar_gpa + kNotifyOffset + uint64_t{kNotifyOffMultiplier} * q;
    if (auto r = vm_.add_ioeventfd(AddressSpace::Mmio, addr, 2, notify_[q].fd(), std::nullopt); !r) {
      log_.log(name_, "cannot register queue notify ioeventfd: " + r.error().message());
    }
  }
  ioeventfds_registered_ = true;
}

void VirtioPciDevice::unregister_ioeventfds() {
  if (!ioeventfds_registered_) return;
  for (uint16_t q = 0; q < num_queues_; ++q) {
    uint64_t addr = bar_gpa_ + kNotifyOffset + uint64_t{kNotifyOffMultiplier} * q;
    (void)vm_.remove_ioeventfd(AddressSpace::Mmio, addr, 2, notify_[q].fd(), std::nullopt);
  }
  ioeventfds_registered_ = false;
}

// ---- common configuration (4.1.4.3) ----

void VirtioPciDevice::snapshot_common(std::array<uint8_t, kCommonCfgSize>& out) const {
  uint8_t* s = out.data();
  out.fill(0);
  uint64_t features = device_->device_features();
  put<uint32_t>(s, kDeviceFeatureSelect, device_feature_select_);
  put<uint32_t>(s, kDeviceFeature,
                device_feature_select_ == 0   ? static_cast<uint32_t>(features)
                : device_feature_select_ == 1 ? static_cast<uint32_t>(features >> 32)
                                              : 0u);
  put<uint32_t>(s, kDriverFeatureSelect, driver_feature_select_);
  put<uint32_t>(s, kDriverFeature,
                driver_feature_select_ == 0   ? static_cast<uint32_t>(driver_features_)
                : driver_feature_select_ == 1 ? static_cast<uint32_t>(driver_features_ >> 32)
                                              : 0u);
  put<uint16_t>(s, kConfigMsixVector, config_vector_.load());
  put<uint16_t>(s, kNumQueues, num_queues_);
  s[kDeviceStatus] = static_cast<uint8_t>(status_ | (needs_reset_.load() ? kStatusNeedsReset : 0));
  s[kConfigGeneration] = device_->config_generation();
  put<uint16_t>(s, kQueueSelect, queue_select_);
  if (queue_select_ < num_queues_) {
    const QueueState& q = queues_[queue_select_];
    put<uint16_t>(s, kQueueSize, q.size);
    put<uint16_t>(s, kQueueMsixVector, queue_vectors_[queue_select_].load());
    put<uint16_t>(s, kQueueEnable, q.enabled ? 1 : 0);
    put<uint16_t>(s, kQueueNotifyOff, queue_select_);
    put<uint64_t>(s, kQueueDesc, q.desc);
    put<uint64_t>(s, kQueueDriver, q.driver);
    put<uint64_t>(s, kQueueDevice, q.device);
  }
}

void VirtioPciDevice::common_read(uint64_t offset, std::span<uint8_t> data) {
  std::array<uint8_t, kCommonCfgSize> snap;
  std::lock_guard lock(mutex_);
  snapshot_common(snap);
  std::memcpy(data.data(), snap.data() + offset, data.size());
}

void VirtioPciDevice::common_write(uint64_t offset, std::span<const uint8_t> data) {
  std::lock_guard lock(mutex_);
  // Merge the write into the current register image, so 64-bit fields
  // written as two 32-bit halves (as Linux does) and narrow writes work.
  std::array<uint8_t, kCommonCfgSize> snap;
  snapshot_common(snap);
  std::memcpy(snap.data() + offset, data.data(), data.size());
  const uint8_t* s = snap.data();
  size_t len = data.size();

  if (touches(offset, len, kDeviceFeatureSelect, 4)) {
    device_feature_select_ = get<uint32_t>(s, kDeviceFeatureSelect);
  }
  if (touches(offset, len, kDriverFeatureSelect, 4)) {
    driver_feature_select_ = get<uint32_t>(s, kDriverFeatureSelect);
  }
  // 3.1.1: features are negotiated before FEATURES_OK; later writes are ignored.
  if (touches(offset, len, kDriverFeature, 4) && !(status_ & kStatusFeaturesOk)) {
    uint64_t v = get<uint32_t>(s, kDriverFeature);
    if (driver_feature_select_ == 0) {
      driver_features_ = (driver_features_ & ~0xffffffffull) | v;
    } else if (driver_feature_select_ == 1) {
      driver_features_ = (driver_features_ & 0xffffffffull) | (v << 32);
    }
  }
  if (touches(offset, len, kConfigMsixVector, 2)) {
    // 4.1.5.1.2: a vector the device cannot use reads back as NO_VECTOR.
    uint16_t v = get<uint16_t>(s, kConfigMsixVector);
    config_vector_.store(v < num_vectors_ ? v : kVirtioNoVector);
  }
  if (touches(offset, len, kQueueSelect, 2)) queue_select_ = get<uint16_t>(s, kQueueSelect);
  // Queue registers: only for an existing queue, before it is enabled and
  // before DRIVER_OK (4.1.4.3.2).
  if (queue_select_ < num_queues_ && !(status_ & kStatusDriverOk)) {
    QueueState& q = queues_[queue_select_];
    if (touches(offset, len, kQueueMsixVector, 2)) {
      uint16_t v = get<uint16_t>(s, kQueueMsixVector);
      queue_vectors_[queue_select_].store(v < num_vectors_ ? v : kVirtioNoVector);
    }
    if (!q.enabled) {
      if (touches(offset, len, kQueueSize, 2)) q.size = get<uint16_t>(s, kQueueSize);
      if (touches(offset, len, kQueueDesc, 8)) q.desc = get<uint64_t>(s, kQueueDesc);
      if (touches(offset, len, kQueueDriver, 8)) q.driver = get<uint64_t>(s, kQueueDriver);
      if (touches(offset, len, kQueueDevice, 8)) q.device = get<uint64_t>(s, kQueueDevice);
      // The driver MUST NOT write 0 to queue_enable; a 0 is ignored.
      if (touches(offset, len, kQueueEnable, 2) && get<uint16_t>(s, kQueueEnable) == 1) {
        q.enabled = true;
      }
    }
  }
  if (touches(offset, len, kDeviceStatus, 1)) write_status(s[kDeviceStatus]);
}

void VirtioPciDevice::write_status(uint8_t value) {
  if (value == 0) {  // 4.1.4.3.1: writing 0 resets the device
    reset_locked();
    return;
  }
  uint8_t old = status_;
  value = static_cast<uint8_t>(value & ~kStatusNeedsReset);  // device-owned bit
  if ((value & kStatusFeaturesOk) && !(old & kStatusFeaturesOk)) {
    // 3.1.1 step 5-6: FEATURES_OK sticks only for a subset of what we offer,
    // and this modern-only transport requires VERSION_1.
    uint64_t offered = device_->device_features();
    if ((driver_features_ & ~offered) != 0 || !(driver_features_ & kVirtioFVersion1)) {
      value = static_cast<uint8_t>(value & ~kStatusFeaturesOk);
    }
  }
  status_ = value;
  if ((value & kStatusDriverOk) && !(old & kStatusDriverOk) && (value & kStatusFeaturesOk) &&
      !needs_reset_.load()) {
    activate();
  }
}

void VirtioPciDevice::activate() {
  std::vector<ActiveQueue> active;
  for (uint16_t i = 0; i < num_queues_; ++i) {
    const QueueState& q = queues_[i];
    if (!q.enabled) continue;
    active.push_back(ActiveQueue{
        .index = i,
        .config = QueueConfig{.size = q.size, .desc_addr = q.desc, .avail_addr = q.driver,
                              .used_addr = q.device},
        .notify_fd = notify_[i].fd()});
  }
  device_->activate(memory_, driver_features_, std::move(active), *this);
}

void VirtioPciDevice::reset_locked() {
  device_->reset();  // joins the queue threads; they never take mutex_
  status_ = 0;
  device_feature_select_ = 0;
  driver_feature_select_ = 0;
  driver_features_ = 0;
  queue_select_ = 0;
  for (uint16_t i = 0; i < num_queues_; ++i) {
    queues_[i] = QueueState{.size = device_->max_queue_size()};
    queue_vectors_[i].store(kVirtioNoVector);
    notify_[i].consume();  // stale notifications belong to the old rings
  }
  config_vector_.store(kVirtioNoVector);
  isr_.store(0);
  needs_reset_.store(false);
  std::lock_guard lock(msix_mutex_);
  std::fill(msix_pending_.begin(), msix_pending_.end(), false);
}

// ---- interrupts ----

void VirtioPciDevice::signal_queue(uint16_t queue) {
  if (queue >= num_queues_) return;
  isr_.fetch_or(1);
  std::lock_guard lock(msix_mutex_);
  deliver(queue_vectors_[queue].load());
}

void VirtioPciDevice::signal_config() {
  isr_.fetch_or(2);
  std::lock_guard lock(msix_mutex_);
  deliver(config_vector_.load());
}

void VirtioPciDevice::needs_reset(std::string_view reason) {
  log_.log(name_, std::string("device needs reset: ") + std::string(reason));
  needs_reset_.store(true);
  // 2.1.2: with DEVICE_NEEDS_RESET set, send a configuration change
  // notification.
  signal_config();
}

void VirtioPciDevice::deliver(uint16_t vector) {
  if (vector >= num_vectors_ || !msix_enabled_) return;  // no INTx fallback
  if (msix_function_masked_ || (msix_table_[vector].control & 1)) {
    msix_pending_[vector] = true;  // PBA; delivered on unmask
    return;
  }
  fire(vector);
}

void VirtioPciDevice::fire(uint16_t vector) {
  if (msix_dirty_[vector]) {
    const MsixEntry& e = msix_table_[vector];
    MsiMessage m{.address = (uint64_t{e.addr_hi} << 32) | e.addr_lo, .data = e.data};
    if (auto r = irqs_[vector]->set_message(m); !r) {
      log_.log(name_, "cannot program MSI-X vector: " + r.error().message());
      return;
    }
    msix_dirty_[vector] = false;
  }
  irqs_[vector]->trigger();
}

void VirtioPciDevice::deliver_unmasked_pending() {
  if (!msix_enabled_ || msix_function_masked_) return;
  for (uint16_t v = 0; v < num_vectors_; ++v) {
    if (msix_pending_[v] && !(msix_table_[v].control & 1)) {
      msix_pending_[v] = false;
      fire(v);
    }
  }
}

void VirtioPciDevice::msix_read(uint64_t offset, std::span<uint8_t> data) {
  std::lock_guard lock(msix_mutex_);
  if (offset >= kMsixPbaOffset) {
    uint64_t byte = offset - kMsixPbaOffset;
    for (size_t i = 0; i < data.size(); ++i) {
      uint8_t bits = 0;
      for (unsigned b = 0; b < 8; ++b) {
        uint64_t v = (byte + i) * 8 + b;
        if (v < num_vectors_ && msix_pending_[v]) bits = static_cast<uint8_t>(bits | (1u << b));
      }
      data[i] = bits;
    }
    return;
  }
  uint64_t rel = offset - kMsixTableOffset;
  uint64_t index = rel / 16;
  if (index >= num_vectors_ || rel % 16 + data.size() > 16) return;
  const MsixEntry& e = msix_table_[index];
  uint32_t words[4] = {e.addr_lo, e.addr_hi, e.data, e.control};
  std::memcpy(data.data(), reinterpret_cast<const uint8_t*>(words) + rel % 16, data.size());
}

void VirtioPciDevice::msix_write(uint64_t offset, std::span<const uint8_t> data) {
  if (offset >= kMsixPbaOffset) return;  // the PBA is read-only
  std::lock_guard lock(msix_mutex_);
  uint64_t rel = offset - kMsixTableOffset;
  uint64_t index = rel / 16;
  if (index >= num_vectors_ || rel % 16 + data.size() > 16) return;
  MsixEntry& e = msix_table_[index];
  uint32_t words[4] = {e.addr_lo, e.addr_hi, e.data, e.control};
  std::memcpy(reinterpret_cast<uint8_t*>(words) + rel % 16, data.data(), data.size());
  if (words[0] != e.addr_lo || words[1] != e.addr_hi || words[2] != e.data) {
    msix_dirty_[index] = true;
  }
  bool was_masked = e.control & 1;
  e = MsixEntry{words[0], words[1], words[2], words[3] & 1};
  if (was_masked && !(e.control & 1) && msix_pending_[index] && msix_enabled_ &&
      !msix_function_masked_) {
    msix_pending_[index] = false;
    fire(static_cast<uint16_t>(index));
  }
}

}  // namespace tern::devices

#include "devices/virtio/transport/pci.h"

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

uint16_t virtio_pci_class(uint32_t device_id) {
  switch (device_id) {
    case 1: return 0x0200;   // network: ethernet
    case 2: return 0x0180;   // mass storage: other
    case 3: return 0x0780;   // communication: other (console)
    case 16: return 0x0380;  // display: other (GPU)
    case 18: return 0x0900;  // input: keyboard
    default: return 0x00ff;  // unclassified
  }
}

SysResult<std::unique_ptr<VirtioPciDevice>> VirtioPciDevice::create(
    std::unique_ptr<VirtioDevice> device, VmServices& vm, const GuestMemory& memory,
    std::string name) {
  uint16_t queues = device->num_queues();
  if (queues == 0 || queues > kVirtioPciMaxQueues) {
    return std::unexpected(SysError{"virtio-pci queue count", EINVAL});
  }
  auto d = std::unique_ptr<VirtioPciDevice>(new VirtioPciDevice(vm, name, queues));
  auto msix = MsixTable::create(vm, d->num_vectors_, [raw = d.get()](const std::string& what) {
    raw->log_.log(raw->name_, what);
  });
  if (!msix) return std::unexpected(msix.error());
  d->msix_ = std::move(*msix);
  auto core = VirtioCore::create(std::move(device), memory, std::move(name), *d, kVirtioPciMaxQueues);
  if (!core) return std::unexpected(core.error());
  d->core_ = std::move(*core);
  d->build_config_space();
  return d;
}

VirtioPciDevice::VirtioPciDevice(VmServices& vm, std::string name, uint16_t num_queues)
    : vm_(vm),
      name_(std::move(name)),
      num_queues_(num_queues),
      num_vectors_(static_cast<uint16_t>(num_queues + 1)),
      queue_vectors_(new std::atomic<uint16_t>[num_queues]) {
  for (uint16_t q = 0; q < num_queues_; ++q) queue_vectors_[q].store(kVirtioNoVector);
}

VirtioPciDevice::~VirtioPciDevice() {
  std::lock_guard lock(mutex_);
  unregister_ioeventfds();
  core_.reset();  // stops the queue threads before the interrupts go away
}

void VirtioPciDevice::build_config_space() {
  uint8_t* c = config_.data();
  // Type-0 header (4.1.2: vendor 0x1af4, device 0x1040 + type, revision 1).
  put<uint16_t>(c, 0x00, 0x1af4);
  uint32_t type = core_->device().device_id();
  put<uint16_t>(c, 0x02, static_cast<uint16_t>(0x1040 + type));
  put<uint16_t>(c, 0x06, 0x0010);  // status: capability list
  c[0x08] = 1;                     // revision
  put<uint16_t>(c, 0x0a, virtio_pci_class(type));
  c[0x09] = 0x00;
  put<uint16_t>(c, 0x2c, 0x1af4);  // subsystem vendor
  put<uint16_t>(c, 0x2e, static_cast<uint16_t>(type));
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
  return core_->status();
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
    if (touches(offset, data.size(), msix_cap_ + 2u, 2)) msix_->set_control(get<uint16_t>(config_.data(), msix_cap_ + 2u));
    window = pci_cfg_window(offset, data.size(), bar, bar_offset, length);
  }
  if (window && offset == pci_cfg_cap_ + 16u && (length == 1 || length == 2 || length == 4) &&
      data.size() >= length) {
    bar_write(bar, bar_offset, data.first(length));
  }
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
    std::lock_guard lock(mutex_);
    core_->read_config(static_cast<uint32_t>(offset - kDeviceCfgOffset), data);
  } else if (offset >= kMsixTableOffset && offset < kMsixPbaOffset) {
    msix_->table_read(offset - kMsixTableOffset, data);
  } else if (offset >= kMsixPbaOffset && offset < kMsixPbaOffset + 0x1000) {
    msix_->pba_read(offset - kMsixPbaOffset, data);
  }
}

void VirtioPciDevice::bar_write(uint8_t bar, uint64_t offset, std::span<const uint8_t> data) {
  if (bar != 0 || offset >= kVirtioBarSize || data.size() > kVirtioBarSize - offset) return;
  if (offset < kCommonCfgOffset + kCommonCfgSize) {
    if (data.size() <= kCommonCfgSize - offset) common_write(offset, data);
  } else if (offset >= kDeviceCfgOffset && offset < kDeviceCfgOffset + kDeviceCfgSize) {
    std::lock_guard lock(mutex_);
    core_->write_config(static_cast<uint32_t>(offset - kDeviceCfgOffset), data);
  } else if (offset >= kNotifyOffset &&
             offset < kNotifyOffset + uint64_t{kNotifyOffMultiplier} * num_queues_) {
    // A notification that did not go through the ioeventfd (before the BAR
    // was placed, or a width the ioeventfd does not match).
    core_->notify(static_cast<uint16_t>((offset - kNotifyOffset) / kNotifyOffMultiplier));
  } else if (offset >= kMsixTableOffset && offset < kMsixPbaOffset) {
    msix_->table_write(offset - kMsixTableOffset, data);
  }  // the PBA is read-only
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
    if (auto r = vm_.add_ioeventfd(AddressSpace::Mmio, addr, 2, core_->notify_fd(q), std::nullopt); !r) {
      log_.log(name_, "cannot register queue notify ioeventfd: " + r.error().message());
    }
  }
  ioeventfds_registered_ = true;
}

void VirtioPciDevice::unregister_ioeventfds() {
  if (!ioeventfds_registered_) return;
  for (uint16_t q = 0; q < num_queues_; ++q) {
    uint64_t addr = bar_gpa_ + kNotifyOffset + uint64_t{kNotifyOffMultiplier} * q;
    (void)vm_.remove_ioeventfd(AddressSpace::Mmio, addr, 2, core_->notify_fd(q), std::nullopt);
  }
  ioeventfds_registered_ = false;
}

// ---- common configuration (4.1.4.3) ----

void VirtioPciDevice::snapshot_common(std::array<uint8_t, kCommonCfgSize>& out) const {
  uint8_t* s = out.data();
  out.fill(0);
  put<uint32_t>(s, kDeviceFeatureSelect, device_feature_select_);
  put<uint32_t>(s, kDeviceFeature, core_->device_features(device_feature_select_));
  put<uint32_t>(s, kDriverFeatureSelect, driver_feature_select_);
  put<uint32_t>(s, kDriverFeature, core_->driver_features(driver_feature_select_));
  put<uint16_t>(s, kConfigMsixVector, config_vector_.load());
  put<uint16_t>(s, kNumQueues, num_queues_);
  s[kDeviceStatus] = core_->status();
  s[kConfigGeneration] = core_->config_generation();
  put<uint16_t>(s, kQueueSelect, queue_select_);
  if (const QueueRegs* q = core_->queue(queue_select_)) {
    put<uint16_t>(s, kQueueSize, q->size);
    put<uint16_t>(s, kQueueMsixVector, queue_vectors_[queue_select_].load());
    put<uint16_t>(s, kQueueEnable, q->ready ? 1 : 0);
    put<uint16_t>(s, kQueueNotifyOff, queue_select_);
    put<uint64_t>(s, kQueueDesc, q->desc);
    put<uint64_t>(s, kQueueDriver, q->driver);
    put<uint64_t>(s, kQueueDevice, q->device);
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
  if (touches(offset, len, kDriverFeature, 4)) {
    core_->set_driver_features(driver_feature_select_, get<uint32_t>(s, kDriverFeature));
  }
  if (touches(offset, len, kConfigMsixVector, 2)) {
    // 4.1.5.1.2: a vector the device cannot use reads back as NO_VECTOR.
    uint16_t v = get<uint16_t>(s, kConfigMsixVector);
    config_vector_.store(v < num_vectors_ ? v : kVirtioNoVector);
  }
  if (touches(offset, len, kQueueSelect, 2)) queue_select_ = get<uint16_t>(s, kQueueSelect);
  // Queue registers: only for an existing queue, before DRIVER_OK
  // (4.1.4.3.2); the addresses and size also only before it is enabled.
  if (queue_select_ < num_queues_ && !(core_->status() & kStatusDriverOk) &&
      touches(offset, len, kQueueMsixVector, 2)) {
    uint16_t v = get<uint16_t>(s, kQueueMsixVector);
    queue_vectors_[queue_select_].store(v < num_vectors_ ? v : kVirtioNoVector);
  }
  QueueRegs* q = (core_->status() & kStatusDriverOk) ? nullptr : core_->queue_for_setup(queue_select_);
  if (q) {
    if (touches(offset, len, kQueueSize, 2)) q->size = get<uint16_t>(s, kQueueSize);
    if (touches(offset, len, kQueueDesc, 8)) q->desc = get<uint64_t>(s, kQueueDesc);
    if (touches(offset, len, kQueueDriver, 8)) q->driver = get<uint64_t>(s, kQueueDriver);
    if (touches(offset, len, kQueueDevice, 8)) q->device = get<uint64_t>(s, kQueueDevice);
    // The driver MUST NOT write 0 to queue_enable; a 0 is ignored.
    if (touches(offset, len, kQueueEnable, 2) && get<uint16_t>(s, kQueueEnable) == 1) q->ready = true;
  }
  if (touches(offset, len, kDeviceStatus, 1)) {
    // 4.1.4.3.1: writing 0 resets the device.
    if (core_->write_status(s[kDeviceStatus]) == StatusWrite::Reset) reset_transport();
  }
}

void VirtioPciDevice::reset_transport() {
  device_feature_select_ = 0;
  driver_feature_select_ = 0;
  queue_select_ = 0;
  for (uint16_t i = 0; i < num_queues_; ++i) queue_vectors_[i].store(kVirtioNoVector);
  config_vector_.store(kVirtioNoVector);
  isr_.store(0);
  msix_->clear_pending();
}

// ---- interrupts ----

void VirtioPciDevice::queue_interrupt(uint16_t queue) {
  if (queue >= num_queues_) return;
  isr_.fetch_or(1);
  msix_->deliver(queue_vectors_[queue].load());
}

void VirtioPciDevice::config_interrupt() {
  isr_.fetch_or(2);
  msix_->deliver(config_vector_.load());
}

}  // namespace tern::devices

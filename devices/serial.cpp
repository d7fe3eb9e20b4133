#include "devices/serial.h"

namespace tern::devices {

namespace {

// Register offsets.
constexpr uint64_t kRbrThrDll = 0, kIerDlm = 1, kIirFcr = 2, kLcr = 3, kMcr = 4, kLsr = 5, kMsr = 6, kScr = 7;
// IER bits.
constexpr uint8_t kIerRxData = 0x01, kIerThrEmpty = 0x02;
// IIR values (bit 0 set: nothing pending; 0xc0: FIFOs enabled).
constexpr uint8_t kIirNone = 0x01, kIirThrEmpty = 0x02, kIirRxData = 0x04, kIirFifo = 0xc0;
constexpr uint8_t kFcrEnable = 0x01, kFcrClearRx = 0x02;
constexpr uint8_t kLcrDlab = 0x80;
constexpr uint8_t kMcrLoop = 0x10;
// LSR: data ready, THR empty, transmitter empty.
constexpr uint8_t kLsrDataReady = 0x01, kLsrThrEmpty = 0x20, kLsrTxEmpty = 0x40;
// MSR with the modem lines up: DCD, DSR, CTS.
constexpr uint8_t kMsrLinesUp = 0xb0;

}  // namespace

Serial16550::Serial16550(std::unique_ptr<ConsoleOutput> out, std::function<void(bool)> irq)
    : out_(std::move(out)), irq_(std::move(irq)) {}

void Serial16550::read(uint64_t offset, std::span<uint8_t> data) {
  std::lock_guard lock(mutex_);
  // Byte registers; wider accesses read consecutive registers.
  for (size_t i = 0; i < data.size(); ++i) data[i] = offset + i < kSize ? read_reg(offset + i) : 0xff;
  update_irq();
}

void Serial16550::write(uint64_t offset, std::span<const uint8_t> data) {
  std::lock_guard lock(mutex_);
  for (size_t i = 0; i < data.size(); ++i) {
    if (offset + i < kSize) write_reg(offset + i, data[i]);
  }
  update_irq();
}

void Serial16550::receive(std::span<const uint8_t> bytes) {
  std::lock_guard lock(mutex_);
  for (uint8_t b : bytes) {
    if (rx_.size() >= kRxFifoMax) break;  // overrun: drop, as hardware does
    rx_.push_back(b);
  }
  update_irq();
}

ConsoleOutputStats Serial16550::output_stats() const {
  return out_ ? out_->stats() : ConsoleOutputStats{};
}

uint8_t Serial16550::interrupt_id() const {
  // Priority (16550 data sheet, table 4): line status, rx data, THR empty, modem.
  if ((ier_ & kIerRxData) && !rx_.empty()) return kIirRxData;
  if ((ier_ & kIerThrEmpty) && thr_interrupt_) return kIirThrEmpty;
  return kIirNone;
}

void Serial16550::update_irq() {
  bool level = interrupt_id() != kIirNone;
  if (level != irq_level_) {
    irq_level_ = level;
    if (irq_) irq_(level);
  }
}

uint8_t Serial16550::read_reg(uint64_t reg) {
  bool dlab = lcr_ & kLcrDlab;
  switch (reg) {
    case kRbrThrDll: {
      if (dlab) return dll_;
      if (rx_.empty()) return 0;
      uint8_t b = rx_.front();
      rx_.pop_front();
      return b;
    }
    case kIerDlm:
      return dlab ? dlm_ : ier_;
    case kIirFcr: {
      uint8_t id = interrupt_id();
      // Reading IIR while it reports THR empty clears that interrupt.
      if (id == kIirThrEmpty) thr_interrupt_ = false;
      return id | ((fcr_ & kFcrEnable) ? kIirFifo : 0);
    }
    case kLcr:
      return lcr_;
    case kMcr:
      return mcr_;
    case kLsr:
      return kLsrThrEmpty | kLsrTxEmpty | (rx_.empty() ? 0 : kLsrDataReady);
    case kMsr:
      if (mcr_ & kMcrLoop) {
        // Loopback: RTS->CTS, DTR->DSR, OUT1->RI, OUT2->DCD.
        return static_cast<uint8_t>(((mcr_ & 0x02) << 3) | ((mcr_ & 0x01) << 5) | ((mcr_ & 0x04) << 4) |
                                    ((mcr_ & 0x08) << 4));
      }
      return kMsrLinesUp;
    case kScr:
      return scr_;
    default:
      return 0xff;
  }
}

void Serial16550::write_reg(uint64_t reg, uint8_t value) {
  bool dlab = lcr_ & kLcrDlab;
  switch (reg) {
    case kRbrThrDll:
      if (dlab) {
        dll_ = value;
      } else {
        transmit(value);
        thr_interrupt_ = true;  // the byte left at once; THR is empty again
      }
      break;
    case kIerDlm:
      if (dlab) {
        dlm_ = value;
      } else {
        // Enabling the THR-empty interrupt while THR is empty raises it.
        if (!(ier_ & kIerThrEmpty) && (value & kIerThrEmpty)) thr_interrupt_ = true;
        ier_ = value & 0x0f;
      }
      break;
    case kIirFcr:
      fcr_ = value;
      if (value & kFcrClearRx) rx_.clear();
      break;
    case kLcr:
      lcr_ = value;
      break;
    case kMcr:
      mcr_ = value & 0x1f;
      break;
    case kScr:
      scr_ = value;
      break;
    default:  // LSR, MSR: read-only
      break;
  }
}

void Serial16550::transmit(uint8_t byte) {
  if (mcr_ & kMcrLoop) {
    if (rx_.size() < kRxFifoMax) rx_.push_back(byte);
    return;
  }
  // Never blocks: a slow, stalled or vanished reader costs dropped bytes.
  if (out_) out_->put(std::span<const uint8_t>(&byte, 1));
}

}  // namespace tern::devices

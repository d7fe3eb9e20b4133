// Serial16550: the COM1 UART (8 I/O ports) as Linux's 8250 driver and a
// simple guest expect it: THR/RBR, IER, IIR/FCR, LCR, MCR, LSR, MSR, SCR
// and the DLAB divisor latch; loopback (MCR bit 4) for the driver's probe;
// the THR-empty interrupt raised when the guest enables it or after each
// transmitted byte (transmission is instantaneous). Output goes to `out`
// (a ConsoleOutput, which never blocks; or nowhere); input bytes come from
// receive().
// Register semantics: the TI/NS16550A data sheet.
//
// Threads: read()/write() from vCPU threads, receive() from an input
// thread; all state is guarded by mutex_. The interrupt callback is called
// with mutex_ held and must not call back into the UART.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <span>

#include "devices/console_output.h"
#include "devices/io_handler.h"

namespace tern::devices {

class Serial16550 final : public IoHandler {
 public:
  // `irq` sets the level of the UART's interrupt line (IRQ 4 on COM1).
  // `out` receives the transmitted bytes; null discards them.
  Serial16550(std::unique_ptr<ConsoleOutput> out, std::function<void(bool level)> irq);

  std::string_view name() const override { return "serial-16550"; }
  void read(uint64_t offset, std::span<uint8_t> data) override;
  void write(uint64_t offset, std::span<const uint8_t> data) override;

  // Bytes typed on the host side, queued for the guest to read from RBR.
  void receive(std::span<const uint8_t> bytes);
  // What reached the output and what was dropped; reported at exit.
  ConsoleOutputStats output_stats() const;
  ConsoleOutput* output() const { return out_.get(); }

  static constexpr uint64_t kSize = 8;
  static constexpr size_t kRxFifoMax = 4096;

 private:
  uint8_t read_reg(uint64_t reg);
  void write_reg(uint64_t reg, uint8_t value);
  void transmit(uint8_t byte);
  uint8_t interrupt_id() const;
  void update_irq();

  const std::unique_ptr<ConsoleOutput> out_;
  const std::function<void(bool)> irq_;
  mutable std::mutex mutex_;
  std::deque<uint8_t> rx_;      // guarded by mutex_
  uint8_t ier_ = 0;             // guarded by mutex_
  uint8_t lcr_ = 0x03;          // guarded by mutex_ (8N1)
  uint8_t mcr_ = 0x08;          // guarded by mutex_ (OUT2)
  uint8_t scr_ = 0;             // guarded by mutex_
  uint8_t fcr_ = 0;             // guarded by mutex_
  uint8_t dll_ = 0x0c, dlm_ = 0;  // guarded by mutex_ (9600 baud)
  bool thr_interrupt_ = false;  // guarded by mutex_: THR-empty pending
  bool irq_level_ = false;      // guarded by mutex_
};

}  // namespace tern::devices

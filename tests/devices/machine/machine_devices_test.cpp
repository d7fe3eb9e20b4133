// The machine's small devices without KVM: the IoBus, the 16550 UART as the
// 8250 driver probes and drives it, the ACPI power registers, the i8042 and
// the power button's interrupt.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "devices/io_bus.h"
#include "devices/power_devices.h"
#include "devices/serial.h"

namespace tern::devices {
namespace {

class Recorder final : public IoHandler {
 public:
  std::string_view name() const override { return "recorder"; }
  void read(uint64_t offset, std::span<uint8_t> data) override {
    for (auto& b : data) b = static_cast<uint8_t>(offset);
  }
  void write(uint64_t offset, std::span<const uint8_t> data) override {
    last_offset = offset;
    last_size = data.size();
  }
  uint64_t last_offset = ~0ull;
  size_t last_size = 0;
};

TEST(IoBus, RoutesByRangeWithOffsets) {
  IoBus bus;
  Recorder a, b;
  ASSERT_TRUE(bus.add(0x3f8, 8, a));
  ASSERT_TRUE(bus.add(0x600, 3, b));
  EXPECT_FALSE(bus.add(0x3fc, 8, b));  // overlaps a
  EXPECT_FALSE(bus.add(0x3f0, 9, b));  // overlaps a from below
  EXPECT_FALSE(bus.add(0x10, 0, b));   // empty
  EXPECT_FALSE(bus.add(~0ull - 1, 4, b));  // wraps
  bus.seal();

  uint8_t v[4] = {1, 2, 3, 4};
  EXPECT_TRUE(bus.write(0x3fd, std::span<const uint8_t>(v, 1)));
  EXPECT_EQ(a.last_offset, 5u);
  EXPECT_TRUE(bus.write(0x601, std::span<const uint8_t>(v, 2)));
  EXPECT_EQ(b.last_offset, 1u);
  EXPECT_EQ(b.last_size, 2u);
  EXPECT_FALSE(bus.write(0x602, std::span<const uint8_t>(v, 2)));  // runs past the end
  uint8_t r[2] = {};
  EXPECT_TRUE(bus.read(0x3ff, std::span<uint8_t>(r, 1)));
  EXPECT_EQ(r[0], 7);
  EXPECT_FALSE(bus.read(0x500, std::span<uint8_t>(r, 2)));  // unmapped: all ones
  EXPECT_EQ(r[0], 0xff);
  EXPECT_EQ(r[1], 0xff);
}

struct Uart {
  Uart() {
    int fds[2];
    EXPECT_EQ(::pipe2(fds, O_CLOEXEC | O_NONBLOCK), 0);
    reader.reset(fds[0]);
    serial = std::make_unique<Serial16550>(*ConsoleOutput::start(UniqueFd(fds[1])), [this](bool l) {
      level = l;
      ++edges;
    });
  }
  uint8_t in(uint64_t reg) {
    uint8_t v;
    serial->read(reg, std::span<uint8_t>(&v, 1));
    return v;
  }
  void out(uint64_t reg, uint8_t v) { serial->write(reg, std::span<const uint8_t>(&v, 1)); }
  std::string output() {
    EXPECT_TRUE(serial->output()->drain(std::chrono::seconds(30)));  // the writer thread has passed it on
    char buf[256];
    ssize_t n = ::read(reader.get(), buf, sizeof buf);
    return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
  }
  UniqueFd reader;
  std::unique_ptr<Serial16550> serial;
  bool level = false;
  int edges = 0;
};

TEST(Serial, TransmitsToTheOutput) {
  Uart u;
  for (char c : std::string("hi\n")) u.out(0, static_cast<uint8_t>(c));
  EXPECT_EQ(u.output(), "hi\n");
  EXPECT_EQ(u.in(5) & 0x60, 0x60);  // THR and transmitter empty
  EXPECT_FALSE(u.level);             // no interrupt enabled
}

TEST(Serial, ScratchLcrAndDivisorLatch) {
  Uart u;
  u.out(7, 0x5a);
  EXPECT_EQ(u.in(7), 0x5a);
  u.out(3, 0x80);  // DLAB
  u.out(0, 0x01);
  u.out(1, 0x00);
  EXPECT_EQ(u.in(0), 0x01);
  EXPECT_EQ(u.in(1), 0x00);
  u.out(3, 0x03);
  EXPECT_EQ(u.in(3), 0x03);
  EXPECT_EQ(u.output(), "");  // divisor writes are not data
}

TEST(Serial, ThrEmptyInterruptAsThe8250DriverExpects) {
  Uart u;
  EXPECT_EQ(u.in(2) & 0x0f, 0x01);  // nothing pending
  u.out(1, 0x02);                    // enable THRI with THR empty: pending at once
  EXPECT_TRUE(u.level);
  EXPECT_EQ(u.in(2) & 0x0f, 0x02);
  EXPECT_FALSE(u.level);             // reading IIR cleared it
  EXPECT_EQ(u.in(2) & 0x0f, 0x01);
  u.out(0, 'x');                     // transmit: THR empty again
  EXPECT_TRUE(u.level);
  u.out(1, 0x00);                    // disabling drops the line
  EXPECT_FALSE(u.level);
  u.out(2, 0x01);                    // FIFO enable shows in IIR
  EXPECT_EQ(u.in(2) & 0xc0, 0xc0);
}

TEST(Serial, ReceiveRaisesDataReady) {
  Uart u;
  u.out(1, 0x01);  // ERBFI
  const uint8_t bytes[] = {'a', 'b'};
  u.serial->receive(bytes);
  EXPECT_TRUE(u.level);
  EXPECT_EQ(u.in(5) & 1, 1);
  EXPECT_EQ(u.in(2) & 0x0f, 0x04);
  EXPECT_EQ(u.in(0), 'a');
  EXPECT_EQ(u.in(0), 'b');
  EXPECT_EQ(u.in(5) & 1, 0);
  EXPECT_FALSE(u.level);
}

TEST(Serial, LoopbackForTheDriversProbe) {
  Uart u;
  u.out(4, 0x10 | 0x0a);  // loop, RTS, OUT2
  EXPECT_EQ(u.in(6) & 0xf0, 0x90);  // CTS and DCD
  u.out(0, 'z');
  EXPECT_EQ(u.output(), "");  // looped back, not transmitted
  EXPECT_EQ(u.in(0), 'z');
  u.out(4, 0x0b);
  EXPECT_EQ(u.in(6), 0xb0);
}

class Sink final : public PowerSink {
 public:
  void request(GuestPowerEvent e) override { events.push_back(e); }
  void request_exit(uint8_t status) override { exits.push_back(status); }
  std::vector<GuestPowerEvent> events;
  std::vector<uint8_t> exits;
};

TEST(Power, AcpiSleepS5PowersOffAndResetRegisterResets) {
  Sink s;
  AcpiPowerDevice d(s);
  auto w = [&](uint64_t off, uint8_t v) { d.write(off, std::span<const uint8_t>(&v, 1)); };
  w(0, 5 << 2);        // S5 without SLP_EN: nothing
  w(0, (3 << 2) | 0x20);  // S3: not supported, nothing
  w(2, 2);             // wrong reset value
  EXPECT_TRUE(s.events.empty());
  w(0, 0x34);
  w(2, 1);
  ASSERT_EQ(s.events.size(), 2u);
  EXPECT_EQ(s.events[0], GuestPowerEvent::PowerOff);
  EXPECT_EQ(s.events[1], GuestPowerEvent::Reset);
}

TEST(Power, I8042ResetCommand) {
  Sink s;
  I8042 k(s);
  uint8_t v = 0xfe;
  k.write(I8042::kDataOffset, std::span<const uint8_t>(&v, 1));
  EXPECT_TRUE(s.events.empty());
  uint8_t st = 0xaa;
  k.read(I8042::kCommandOffset, std::span<uint8_t>(&st, 1));
  EXPECT_EQ(st, 0);
  k.write(I8042::kCommandOffset, std::span<const uint8_t>(&v, 1));
  ASSERT_EQ(s.events.size(), 1u);
  EXPECT_EQ(s.events[0], GuestPowerEvent::Reset);
}

TEST(Power, PowerButtonRaisesOneEdgePerPress) {
  struct CountingLine final : IrqLine {
    explicit CountingLine(int& n) : edges(n) {}
    void trigger() override { ++edges; }
    int& edges;
  };
  int edges = 0;
  PowerButton button(std::make_unique<CountingLine>(edges));
  EXPECT_EQ(edges, 0);
  button.press();
  EXPECT_EQ(edges, 1);
  button.press();
  EXPECT_EQ(edges, 2);
}

TEST(Power, GuestExitDeviceCarriesTheWrittenByte) {
  Sink s;
  GuestExitDevice x(s);
  uint8_t st = 0xaa;
  x.read(0, std::span<uint8_t>(&st, 1));
  EXPECT_EQ(st, 0);
  uint8_t v = 7;
  x.write(0, std::span<const uint8_t>(&v, 1));
  const uint8_t wide[2] = {0, 9};  // a 16-bit write of 0x0900: the low byte
  x.write(0, std::span<const uint8_t>(wide, 2));
  EXPECT_EQ(s.exits, (std::vector<uint8_t>{7, 0}));
  EXPECT_TRUE(s.events.empty());
}

}  // namespace
}  // namespace tern::devices

// VirtioCore and QueueRunner without any transport: a fake device with
// fake signals; what a driver does is called directly on the core.
#include "devices/virtio/virtio_core.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>

#include "devices/virtio/queue_runner.h"
#include "devices/virtio/transport/mmio.h"
#include "devices/virtio/transport/pci.h"
#include "tests/devices/virtio/fakes.h"

namespace tern::devices {
namespace {

using testing::DriverQueue;
using testing::FakeInterrupt;
using testing::TestRam;
using testing::wait_for;

constexpr uint64_t kOffered = kVirtioFVersion1 | kVirtioFRingEventIdx | (1ull << 3);

class FakeDevice final : public VirtioDevice {
 public:
  uint32_t device_id() const override { return 42; }
  uint64_t device_features() const override { return kOffered; }
  uint16_t num_queues() const override { return queues; }
  uint16_t max_queue_size() const override { return 64; }
  uint8_t config_generation() const override { return generation; }
  void read_config(uint32_t offset, std::span<uint8_t> data) const override {
    for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(offset + i);
  }
  void write_config(uint32_t, std::span<const uint8_t>) override {}
  void activate(const GuestMemory&, uint64_t features, std::vector<ActiveQueue> active,
                VirtioInterrupt& irq) override {
    ++activations;
    last_features = features;
    last_queues = std::move(active);
    interrupt = &irq;
  }
  void reset() override {
    ++resets;
    interrupt = nullptr;
  }
  void disable_queue(uint16_t index) override { disabled.push_back(index); }
  void enable_queue(const GuestMemory&, uint64_t, const ActiveQueue& q, VirtioInterrupt&) override {
    enabled.push_back(q);
  }

  uint16_t queues = 2;
  uint8_t generation = 7;
  int activations = 0, resets = 0;
  uint64_t last_features = 0;
  std::vector<ActiveQueue> last_queues;
  std::vector<uint16_t> disabled;
  std::vector<ActiveQueue> enabled;
  VirtioInterrupt* interrupt = nullptr;
};

struct FakeSignals final : TransportSignals {
  void queue_interrupt(uint16_t q) override { queue.push_back(q); }
  void config_interrupt() override { ++config; }
  std::vector<uint16_t> queue;
  int config = 0;
};

struct CoreFixture : ::testing::Test {
  TestRam ram{1 << 20};
  FakeSignals signals;
  FakeDevice* dev = nullptr;
  std::unique_ptr<VirtioCore> core;

  void SetUp() override {
    auto d = std::make_unique<FakeDevice>();
    dev = d.get();
    auto c = VirtioCore::create(std::move(d), ram.memory(), "fake", signals, 8);
    ASSERT_TRUE(c.has_value());
    core = std::move(*c);
  }
  void negotiate(uint64_t features) {
    core->write_status(kStatusAcknowledge);
    core->write_status(kStatusAcknowledge | kStatusDriver);
    core->set_driver_features(0, static_cast<uint32_t>(features));
    core->set_driver_features(1, static_cast<uint32_t>(features >> 32));
    core->write_status(kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk);
  }
  static constexpr uint8_t kAll = kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk | kStatusDriverOk;
};

TEST(VirtioCoreCreate, RefusesNoQueuesOrTooMany) {
  TestRam ram(4096);
  FakeSignals s;
  auto none = std::make_unique<FakeDevice>();
  none->queues = 0;
  EXPECT_FALSE(VirtioCore::create(std::move(none), ram.memory(), "x", s, 8).has_value());
  auto many = std::make_unique<FakeDevice>();
  many->queues = 9;
  EXPECT_FALSE(VirtioCore::create(std::move(many), ram.memory(), "x", s, 8).has_value());
}

TEST_F(CoreFixture, FeatureWindows) {
  EXPECT_EQ(core->device_features(0), static_cast<uint32_t>(kOffered));
  EXPECT_EQ(core->device_features(1), static_cast<uint32_t>(kOffered >> 32));
  EXPECT_EQ(core->device_features(2), 0u);
  EXPECT_EQ(core->device_features(0xffffffff), 0u);
  core->set_driver_features(5, 0xffffffff);  // no such window: ignored
  EXPECT_EQ(core->driver_features(), 0u);
}

TEST_F(CoreFixture, FeaturesOkOnlyForAnOfferedSubsetWithVersion1) {
  negotiate(kOffered & ~kVirtioFVersion1);
  EXPECT_FALSE(core->status() & kStatusFeaturesOk);
  EXPECT_EQ(core->write_status(0), StatusWrite::Reset);
  negotiate(kOffered | (1ull << 40));
  EXPECT_FALSE(core->status() & kStatusFeaturesOk);
  core->write_status(0);
  negotiate(kVirtioFVersion1);
  EXPECT_TRUE(core->status() & kStatusFeaturesOk);
  core->set_driver_features(0, 0xffffffff);  // frozen after FEATURES_OK
  EXPECT_EQ(core->driver_features(), kVirtioFVersion1);
}

TEST_F(CoreFixture, StatusNeverMovesBackwards) {
  negotiate(kOffered);
  EXPECT_EQ(core->write_status(kStatusAcknowledge), StatusWrite::Refused);
  EXPECT_EQ(core->status(), kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk);
  // The driver cannot set the device's NEEDS_RESET bit.
  EXPECT_EQ(core->write_status(kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk | kStatusNeedsReset),
            StatusWrite::Accepted);
  EXPECT_FALSE(core->status() & kStatusNeedsReset);
}

TEST_F(CoreFixture, DriverOkActivatesWithTheReadyQueuesOnly) {
  negotiate(kOffered);
  QueueRegs* q1 = core->queue_for_setup(1);
  ASSERT_NE(q1, nullptr);
  *q1 = QueueRegs{.size = 16, .ready = true, .desc = 0x1000, .driver = 0x2000, .device = 0x3000};
  EXPECT_EQ(core->queue_for_setup(1), nullptr);  // ready: frozen
  EXPECT_EQ(core->queue_for_setup(2), nullptr);  // no such queue
  EXPECT_EQ(core->queue(2), nullptr);
  core->write_status(kAll);
  ASSERT_EQ(dev->activations, 1);
  EXPECT_EQ(dev->last_features, kOffered);
  ASSERT_EQ(dev->last_queues.size(), 1u);
  EXPECT_EQ(dev->last_queues[0].index, 1);
  EXPECT_EQ(dev->last_queues[0].config.avail_addr, 0x2000u);
  EXPECT_EQ(dev->last_queues[0].notify_fd, core->notify_fd(1));
  // Not ready: its set-up may go on (virtio-mmio may enable it later;
  // virtio-pci freezes it at DRIVER_OK itself).
  EXPECT_NE(core->queue_for_setup(0), nullptr);
  core->write_status(kAll);  // again: no second activation
  EXPECT_EQ(dev->activations, 1);
}

// QueueReady (virtio-mmio, 4.2.2) through the core: before DRIVER_OK only
// the registers change; once active, the device stops or starts the queue.
TEST_F(CoreFixture, QueueReadyDisablesAndEnablesOneQueue) {
  negotiate(kOffered);
  *core->queue_for_setup(0) = QueueRegs{.size = 16, .desc = 0x1000, .driver = 0x2000, .device = 0x3000};
  core->set_queue_ready(0, true);
  EXPECT_EQ(core->queue_for_setup(0), nullptr);
  core->set_queue_ready(0, false);
  ASSERT_NE(core->queue_for_setup(0), nullptr);  // writable again
  core->queue_for_setup(0)->desc = 0x4000;
  core->set_queue_ready(0, true);
  EXPECT_TRUE(dev->disabled.empty());
  EXPECT_TRUE(dev->enabled.empty());
  core->write_status(kAll);
  ASSERT_EQ(dev->last_queues.size(), 1u);
  EXPECT_EQ(dev->last_queues[0].config.desc_addr, 0x4000u);
  core->set_queue_ready(0, false);
  EXPECT_EQ(dev->disabled, std::vector<uint16_t>{0});
  core->set_queue_ready(0, false);  // already disabled: nothing more
  EXPECT_EQ(dev->disabled.size(), 1u);
  core->queue_for_setup(0)->desc = 0x5000;
  core->set_queue_ready(0, true);
  ASSERT_EQ(dev->enabled.size(), 1u);
  EXPECT_EQ(dev->enabled[0].config.desc_addr, 0x5000u);
  EXPECT_EQ(dev->enabled[0].notify_fd, core->notify_fd(0));
  core->write_status(0);
  core->set_queue_ready(0, true);  // after a reset: registers only again
  EXPECT_EQ(dev->enabled.size(), 1u);
}

TEST_F(CoreFixture, DriverOkWithoutFeaturesOkDoesNotActivate) {
  core->write_status(kStatusAcknowledge | kStatusDriver | kStatusDriverOk);
  EXPECT_EQ(dev->activations, 0);
}

TEST_F(CoreFixture, NeedsResetSetsTheBitSignalsConfigAndResetClearsIt) {
  negotiate(kOffered);
  core->write_status(kAll);
  ASSERT_NE(dev->interrupt, nullptr);
  dev->interrupt->signal_queue(1);
  EXPECT_EQ(signals.queue, std::vector<uint16_t>{1});
  dev->interrupt->needs_reset("test");
  EXPECT_TRUE(core->status() & kStatusNeedsReset);
  EXPECT_EQ(signals.config, 1);
  EXPECT_EQ(core->write_status(0), StatusWrite::Reset);
  EXPECT_EQ(core->status(), 0);
  EXPECT_EQ(dev->resets, 1);
  EXPECT_EQ(core->queue(1)->size, 64);
  EXPECT_FALSE(core->queue(1)->ready);
  EXPECT_EQ(core->driver_features(), 0u);
}

TEST_F(CoreFixture, NeedsResetBlocksActivationUntilReset) {
  negotiate(kOffered);
  core->fail("transport saw nonsense");
  core->write_status(kAll);
  EXPECT_EQ(dev->activations, 0);
}

TEST_F(CoreFixture, ConfigSpaceAndGenerationComeFromTheDevice) {
  uint8_t b[4];
  core->read_config(8, b);
  EXPECT_EQ(b[0], 8);
  EXPECT_EQ(b[3], 11);
  EXPECT_EQ(core->config_generation(), 7);
}

// ---- QueueRunner ----

// Answers every chain at once with the number of its buffers as used length.
class CountingHandler final : public QueueHandler {
 public:
  explicit CountingHandler(std::atomic<int>& handled) : handled_(handled) {}
  void handle(DescriptorChain chain) override {
    chain.set_used_len(static_cast<uint32_t>(chain.buffers().size()));
    handled_.fetch_add(1);
  }

 private:
  std::atomic<int>& handled_;
};

TEST(QueueRunner, ServesChainsAndInterrupts) {
  TestRam ram(1 << 20);
  DriverQueue dq(ram, 16, 0x1000);
  auto notify = EventFd::create();
  ASSERT_TRUE(notify.has_value());
  FakeInterrupt irq;
  std::atomic<int> handled{0};
  ActiveQueue q{.index = 3, .config = dq.config(), .notify_fd = notify->fd()};
  auto runner = QueueRunner::start(ram.memory(), kVirtioFVersion1, q, 16, irq, [&](uint16_t size) {
    EXPECT_EQ(size, 16);
    return std::expected<std::unique_ptr<QueueHandler>, std::string>(std::make_unique<CountingHandler>(handled));
  });
  ASSERT_NE(runner, nullptr);
  dq.add_chain({{0x10000, 16, false}, {0x11000, 1, true}});
  notify->signal();
  ASSERT_TRUE(wait_for([&] { return dq.used_idx() == 1 && irq.queue_signals.load() >= 1; }));
  EXPECT_EQ(dq.used_elem(0).second, 2u);
  EXPECT_EQ(handled.load(), 1);
  runner.reset();  // stops and joins
  EXPECT_EQ(irq.resets.load(), 0);
}

TEST(QueueRunner, BadRingOrHandlerFailureIsNeedsReset) {
  TestRam ram(1 << 20);
  auto notify = EventFd::create();
  FakeInterrupt irq;
  auto ok_handler = [](uint16_t) -> std::expected<std::unique_ptr<QueueHandler>, std::string> {
    return std::unexpected("no context");
  };
  ActiveQueue outside{.index = 0, .config = QueueConfig{16, 0x40000000, 0x40001000, 0x40002000},
                      .notify_fd = notify->fd()};
  EXPECT_EQ(QueueRunner::start(ram.memory(), 0, outside, 16, irq, ok_handler), nullptr);
  DriverQueue dq(ram, 16, 0x1000);
  ActiveQueue good{.index = 0, .config = dq.config(), .notify_fd = notify->fd()};
  EXPECT_EQ(QueueRunner::start(ram.memory(), 0, good, 16, irq, ok_handler), nullptr);
  EXPECT_EQ(irq.resets.load(), 2);
}

// ---- a second device: what a new virtio device takes ----

// An entropy device (virtio 5.4) that fills every writable buffer with 0xab:
// its VirtioDevice part and its QueueHandler are all it needs; the core,
// the runner and either transport carry it unchanged.
class FillHandler final : public QueueHandler {
 public:
  void handle(DescriptorChain chain) override {
    uint32_t n = 0;
    for (const ChainBuffer& b : chain.buffers()) {
      if (!b.device_writable) continue;
      std::memset(b.bytes.data(), 0xab, b.bytes.size());
      n += static_cast<uint32_t>(b.bytes.size());
    }
    chain.set_used_len(n);
  }
};

class FillDevice final : public VirtioDevice {
 public:
  uint32_t device_id() const override { return 4; }
  uint64_t device_features() const override { return kVirtioFVersion1; }
  uint16_t num_queues() const override { return 1; }
  uint16_t max_queue_size() const override { return 16; }
  uint8_t config_generation() const override { return 0; }
  void read_config(uint32_t, std::span<uint8_t> data) const override { std::fill(data.begin(), data.end(), 0); }
  void write_config(uint32_t, std::span<const uint8_t>) override {}
  void activate(const GuestMemory& memory, uint64_t features, std::vector<ActiveQueue> queues,
                VirtioInterrupt& interrupt) override {
    for (const ActiveQueue& q : queues) {
      auto r = QueueRunner::start(memory, features, q, 16, interrupt, [](uint16_t) {
        return std::expected<std::unique_ptr<QueueHandler>, std::string>(std::make_unique<FillHandler>());
      });
      if (r) runners_.push_back(std::move(r));
    }
  }
  void reset() override { runners_.clear(); }
  void disable_queue(uint16_t index) override {
    std::erase_if(runners_, [&](const auto& r) { return r->index() == index; });
  }
  void enable_queue(const GuestMemory&, uint64_t, const ActiveQueue&, VirtioInterrupt&) override {}

 private:
  std::vector<std::unique_ptr<QueueRunner>> runners_;
};

TEST(SecondDevice, RunsOverVirtioMmioAndIsClassifiedOnPci) {
  TestRam ram(1 << 20);
  testing::FakeVmServices vm;
  auto mmio = VirtioMmioDevice::create(std::make_unique<FillDevice>(), vm, ram.memory(), "fill", 0xe0100000, 5);
  ASSERT_TRUE(mmio.has_value());
  auto wr = [&](uint64_t off, uint32_t v) {
    (*mmio)->write(off, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(&v), 4));
  };
  DriverQueue dq(ram, 16, 0x1000);
  QueueConfig c = dq.config();
  wr(mmio_reg::kStatus, kStatusAcknowledge | kStatusDriver);
  wr(mmio_reg::kDriverFeaturesSel, 1);
  wr(mmio_reg::kDriverFeatures, 1);  // VERSION_1
  wr(mmio_reg::kStatus, kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk);
  wr(mmio_reg::kQueueNum, 16);
  wr(mmio_reg::kQueueDescLow, static_cast<uint32_t>(c.desc_addr));
  wr(mmio_reg::kQueueDriverLow, static_cast<uint32_t>(c.avail_addr));
  wr(mmio_reg::kQueueDeviceLow, static_cast<uint32_t>(c.used_addr));
  wr(mmio_reg::kQueueReady, 1);
  wr(mmio_reg::kStatus, kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk | kStatusDriverOk);
  dq.add_chain({{0x10000, 64, true}});
  wr(mmio_reg::kQueueNotify, 0);
  ASSERT_TRUE(wait_for([&] { return dq.used_idx() == 1; }));
  EXPECT_EQ(dq.used_elem(0).second, 64u);
  EXPECT_EQ(ram.get<uint8_t>(0x10000 + 63), 0xab);

  auto pci = VirtioPciDevice::create(std::make_unique<FillDevice>(), vm, ram.memory(), "fill");
  ASSERT_TRUE(pci.has_value());
  uint32_t id_class[3] = {};
  (*pci)->config_read(0, std::span<uint8_t>(reinterpret_cast<uint8_t*>(id_class), 12));
  EXPECT_EQ(id_class[0], 0x1044u << 16 | 0x1af4u);
  EXPECT_EQ(id_class[2] >> 16, 0x00ffu);  // class: unclassified, from the device type
}

}  // namespace
}  // namespace tern::devices

// How big one virtio-blk request may be, and what happens past that: the
// device advertises seg_max and size_max (virtio 1.x 5.2.4) and answers a
// request beyond them with IOERR; nothing a guest sends makes the backend
// allocate without bound, crash, or make a reset wait behind it.
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <filesystem>

#include "block/open.h"
#include "devices/virtio/blk/device.h"
#include "tests/devices/virtio/fakes.h"

namespace tern::devices {
namespace {

using testing::DriverQueue;
using testing::FakeInterrupt;
using testing::MemDisk;
using testing::TestRam;
using testing::wait_for;

constexpr uint64_t kRam = 8 << 20;
constexpr uint64_t kRing = 0x1000;      // rings of up to 2048 entries end before 0x10000
constexpr uint64_t kHdr = 0x10000;      // request header
constexpr uint64_t kStatus = 0x11000;   // status byte
constexpr uint64_t kTable = 0x20000;    // indirect table (up to 0x20000 bytes)
constexpr uint64_t kData = 0x400000;    // data buffers
constexpr uint32_t kSizeMax = 1 << 20;  // what the device advertises (docs/virtio.md)
constexpr uint64_t kFeatureSizeMax = 1ull << 1;  // VIRTIO_BLK_F_SIZE_MAX (5.2.3)

// A huge, lazily backed guest RAM region, for requests of terabytes that
// point many descriptors at the same gigabytes.
class HugeRegion {
 public:
  explicit HugeRegion(uint64_t bytes) : bytes_(bytes) {
    void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p != MAP_FAILED) host_ = static_cast<uint8_t*>(p);
  }
  ~HugeRegion() {
    if (host_) ::munmap(host_, bytes_);
  }
  HugeRegion(const HugeRegion&) = delete;
  HugeRegion& operator=(const HugeRegion&) = delete;
  uint8_t* host() const { return host_; }
  uint64_t size() const { return bytes_; }

 private:
  uint64_t bytes_;
  uint8_t* host_ = nullptr;
};

struct LimitsFixture : ::testing::Test {
  TestRam ram{kRam};
  GuestMemory memory = ram.memory();
  std::optional<DriverQueue> driver;
  std::unique_ptr<VirtioBlk> blk;
  FakeInterrupt irq;
  EventFd notify = *EventFd::create();
  uint64_t features = kVirtioFVersion1 | kVirtioFRingIndirectDesc | kVirtioFRingEventIdx;
  std::string dir;

  void make(std::unique_ptr<block::DiskFile> disk, uint16_t queue_size) {
    driver.emplace(ram, queue_size, kRing);
    blk = std::make_unique<VirtioBlk>(
        std::move(disk), VirtioBlkOptions{.read_only = false, .num_queues = 1, .queue_size = queue_size, .serial = "", .id = "d"});
  }
  void make_mem(uint64_t disk_bytes, uint16_t queue_size) {
    make(std::make_unique<MemDisk>(disk_bytes), queue_size);
  }
  // A sparse raw file under /var/tmp (a disk filesystem, where O_DIRECT works).
  std::unique_ptr<block::DiskFile> raw_file(uint64_t bytes, bool direct, block::AioMode aio) {
    char tmpl[] = "/var/tmp/tern-limits-XXXXXX";
    if (!::mkdtemp(tmpl)) return nullptr;
    dir = tmpl;
    std::string path = dir + "/disk.img";
    int fd = ::open(path.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0644);
    if (fd < 0) return nullptr;
    bool sized = ::ftruncate(fd, static_cast<off_t>(bytes)) == 0;
    ::close(fd);
    if (!sized) return nullptr;
    auto disk = block::open_disk(block::OpenOptions{
        .path = path, .type = block::ImageType::Raw, .direct = direct, .aio = aio});
    return disk ? std::move(*disk) : nullptr;
  }
  void start() {
    blk->activate(memory, features | blk->device_features(),
                  {ActiveQueue{0, driver->config(), notify.fd()}}, irq);
  }
  void TearDown() override {
    if (blk) blk->reset();
    blk.reset();
    if (!dir.empty()) std::filesystem::remove_all(dir);
  }

  void header(uint32_t type, uint64_t sector) {
    ram.put<uint32_t>(kHdr, type);
    ram.put<uint32_t>(kHdr + 4, 0);
    ram.put<uint64_t>(kHdr + 8, sector);
    ram.put<uint8_t>(kStatus, 0xee);
  }
  // One request through an indirect table: header, the data buffers, status.
  void send_indirect(uint32_t type, const std::vector<DriverQueue::Buf>& data, uint64_t table = kTable) {
    header(type, 0);
    std::vector<DriverQueue::Buf> bufs{{kHdr, 16, false}};
    bufs.insert(bufs.end(), data.begin(), data.end());
    bufs.push_back({kStatus, 1, true});
    driver->add_indirect(bufs, table);
    notify.signal();
  }
  uint8_t status() { return ram.get<uint8_t>(kStatus); }
  bool wait_used(uint16_t count) {
    return wait_for([&] { return driver->used_idx() >= count; });
  }
  uint32_t config_u32(uint32_t offset) {
    uint32_t v = 0;
    blk->read_config(offset, std::span<uint8_t>(reinterpret_cast<uint8_t*>(&v), sizeof v));
    return v;
  }
};

TEST_F(LimitsFixture, SizeMaxAndSegMaxAreAdvertised) {
  make_mem(1 << 20, 32);
  EXPECT_TRUE(blk->device_features() & kFeatureSizeMax);
  EXPECT_TRUE(blk->device_features() & kBlkFSegMax);
  EXPECT_EQ(config_u32(8), kSizeMax);  // size_max
  EXPECT_EQ(config_u32(12), 30u);      // seg_max: queue size less header and status
  make_mem(1 << 20, 2048);
  EXPECT_EQ(config_u32(12), 1024u);    // seg_max: at most IOV_MAX data segments
}

// 5.2.4: seg_max is "the maximum number of segments in a request". Before,
// it was advertised and not enforced.
TEST_F(LimitsFixture, MoreSegmentsThanSegMaxIsAnIoError) {
  make_mem(1 << 20, 2048);
  start();
  std::vector<DriverQueue::Buf> data(1024, {kData, 512, true});
  send_indirect(kBlkTIn, data);
  ASSERT_TRUE(wait_used(1));
  EXPECT_EQ(status(), kBlkSOk);
  data.push_back({kData, 512, true});  // 1025 data segments
  send_indirect(kBlkTIn, data, kTable + 0x10000);
  ASSERT_TRUE(wait_used(2));
  EXPECT_EQ(status(), kBlkSIoErr);
  EXPECT_EQ(driver->used_elem(1).second, 1u);  // nothing but the status byte written
  EXPECT_EQ(irq.resets.load(), 0);             // a bad request, not a broken queue
}

// 5.2.4: size_max is "the maximum size of any single segment".
TEST_F(LimitsFixture, SegmentLongerThanSizeMaxIsAnIoError) {
  make_mem(4 << 20, 32);
  start();
  send_indirect(kBlkTIn, {{kData, kSizeMax, true}});
  ASSERT_TRUE(wait_used(1));
  EXPECT_EQ(status(), kBlkSOk);
  send_indirect(kBlkTIn, {{kData, kSizeMax + 512, true}});
  ASSERT_TRUE(wait_used(2));
  EXPECT_EQ(status(), kBlkSIoErr);
  send_indirect(kBlkTOut, {{kData, 512, false}, {kData, kSizeMax + 512, false}});
  ASSERT_TRUE(wait_used(3));
  EXPECT_EQ(status(), kBlkSIoErr);
  EXPECT_EQ(blk->counters().errors, 2u);
  EXPECT_EQ(irq.resets.load(), 0);
}

// Before: a request of ~4 TiB from unaligned guest buffers made the
// direct=on raw backend bounce it through one aligned_alloc of 4 TiB, whose
// NULL was then written to (SIGSEGV).
TEST_F(LimitsFixture, FourTebibyteRequestOnDirectRawIsAnIoErrorNotACrash) {
  constexpr uint64_t kHugeGpa = uint64_t{1} << 32;
  constexpr uint32_t kSeg = 0xfffff000u;  // the largest 4 KiB-aligned descriptor length
  HugeRegion huge(uint64_t{1} << 32);
  ASSERT_NE(huge.host(), nullptr);
  memory = GuestMemory({GuestMemory::Region{0, ram.size(), ram.at(0)},
                        GuestMemory::Region{kHugeGpa, huge.size(), huge.host()}});
  auto disk = raw_file(uint64_t{5} << 40, /*direct=*/true, block::AioMode::Sync);
  if (!disk) GTEST_SKIP() << "cannot make a 5 TiB sparse file with O_DIRECT under /var/tmp";
  make(std::move(disk), 2048);
  start();
  // 1025 segments of almost 4 GiB, each starting one byte into the region
  // (unaligned, so the backend would have to bounce it): just over 4 TiB.
  std::vector<DriverQueue::Buf> data(1025, {kHugeGpa + 1, kSeg, false});
  send_indirect(kBlkTOut, data);
  ASSERT_TRUE(wait_used(1));
  EXPECT_EQ(status(), kBlkSIoErr);
  // The same within seg_max but with segments past size_max: refused too.
  send_indirect(kBlkTIn, std::vector<DriverQueue::Buf>(1024, {kHugeGpa + 1, kSeg, true}),
                kTable + 0x10000);
  ASSERT_TRUE(wait_used(2));
  EXPECT_EQ(status(), kBlkSIoErr);
  EXPECT_EQ(irq.resets.load(), 0);
}

// A queue full of the largest requests the device accepts; a reset (also
// what shutdown does) must not run them all before it returns. Counted, not
// timed: before, every request ran to the end (all of them counted).
//
// The requests are writes: every one reads the same guest buffer, which no
// thread writes meanwhile. As reads they had the worker pool's threads
// write that buffer concurrently, a race by design that ThreadSanitizer
// tracks per 8-byte word (one entry per racy address, each new race
// checked against all of them): a 64 MiB read then ran for minutes and more,
// so Threads "hung" with one request never completing and was excluded
// from CI's TSan pass.
class ResetBehindHugeRequests : public LimitsFixture,
                                public ::testing::WithParamInterface<block::AioMode> {};

TEST_P(ResetBehindHugeRequests, ResetDoesNotWaitForAQueueOfHugeRequests) {
  constexpr uint16_t kQueue = 128;
  constexpr uint32_t kSegments = 64;  // 64 MiB per request
  auto disk = raw_file(uint64_t{kSegments} * kSizeMax, /*direct=*/false, GetParam());
  ASSERT_TRUE(disk);
  make(std::move(disk), kQueue);
  // One shared indirect table: header, 64 segments of 1 MiB (all the same
  // guest buffer), status; every head of the ring points at it.
  header(kBlkTOut, 0);
  std::vector<DriverQueue::Buf> bufs{{kHdr, 16, false}};
  for (uint32_t i = 0; i < kSegments; ++i) bufs.push_back({kData, kSizeMax, false});
  bufs.push_back({kStatus, 1, true});
  for (size_t i = 0; i < bufs.size(); ++i) {
    uint16_t flags = (bufs[i].write ? kVirtqDescFWrite : 0) | (i + 1 < bufs.size() ? kVirtqDescFNext : 0);
    DriverQueue::write_desc_at(ram, kTable + 16 * i, bufs[i].addr, bufs[i].len, flags,
                               static_cast<uint16_t>(i + 1));
  }
  constexpr uint16_t kRequests = kQueue - 1;
  for (uint16_t head = 0; head < kRequests; ++head) {
    driver->write_desc(head, kTable, static_cast<uint32_t>(16 * bufs.size()), kVirtqDescFIndirect, 0);
    driver->publish(head);
  }
  std::memset(ram.at(kData), 0xff, kSizeMax);
  int file = ::open((dir + "/disk.img").c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(file, 0);
  start();
  notify.signal();
  // Some work has really started before the reset: the first write has
  // reached the file (which was all zeros). Completions may not be counted
  // yet: a backend that runs requests in submit() is reaped after the ring
  // is served.
  EXPECT_TRUE(wait_for([&] {
    uint8_t first = 0;
    return ::pread(file, &first, 1, 0) == 1 && first == 0xff;
  }));
  ::close(file);
  blk->reset();
  BlkCounters c = blk->counters();
  EXPECT_LT(c.write_ops, kRequests) << "the reset ran every queued request first";
  EXPECT_EQ(irq.resets.load(), 0);
}

std::string aio_name(const ::testing::TestParamInfo<block::AioMode>& info) {
  static const char* const kKinds[] = {"Sync", "Native", "Threads"};
  return kKinds[static_cast<int>(info.param)];
}

INSTANTIATE_TEST_SUITE_P(AllRawKinds, ResetBehindHugeRequests,
                         ::testing::Values(block::AioMode::Sync, block::AioMode::Native,
                                           block::AioMode::Threads),
                         aio_name);

}  // namespace
}  // namespace tern::devices

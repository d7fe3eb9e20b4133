// Integrity: dirty and corrupt bits, autoclear bits, WritingHeader apart
// from SyncingHeader (fault-injecting file layer), tern-img check agreeing
// with qemu-img check, and a writer SIGKILLed at random points.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include "block/qcow2/big_endian.h"
#include "block/qcow2/create.h"
#include "block/qcow2/engine.h"
#include "block/qcow2/format.h"
#include "tests/block/qcow2/qcow2_test_util.h"

namespace tern::block::qcow2::test {
namespace {

void poke_be64(const std::string& path, uint64_t offset, uint64_t value) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  uint8_t bytes[8];
  store_be<uint64_t>(bytes, value);
  f.seekp(static_cast<std::streamoff>(offset));
  f.write(reinterpret_cast<char*>(bytes), 8);
}

void poke_be16(const std::string& path, uint64_t offset, uint16_t value) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  uint8_t bytes[2];
  store_be<uint16_t>(bytes, value);
  f.seekp(static_cast<std::streamoff>(offset));
  f.write(reinterpret_cast<char*>(bytes), 2);
}

uint64_t peek_be64(const std::string& path, uint64_t offset) {
  std::ifstream f(path, std::ios::binary);
  uint8_t bytes[8] = {};
  f.seekg(static_cast<std::streamoff>(offset));
  f.read(reinterpret_cast<char*>(bytes), 8);
  return load_be<uint64_t>(bytes);
}

constexpr uint64_t kIncompat = 72;
constexpr uint64_t kAutoclear = 88;

// A file layer that fails a chosen call, to tell failing steps apart.
class FaultyFile final : public HostFile {
 public:
  enum class Fail { None, HeaderWrite, Sync };
  FaultyFile(std::unique_ptr<HostFile> inner, Fail fail) : inner_(std::move(inner)), fail_(fail) {}
  Result<void> read_at(uint64_t o, std::span<uint8_t> b) override { return inner_->read_at(o, b); }
  Result<void> write_at(uint64_t o, std::span<const uint8_t> b) override {
    if (fail_ == Fail::HeaderWrite && o == 0) return fail(Errc::WriteFailed, EIO);
    return inner_->write_at(o, b);
  }
  Result<void> sync() override {
    if (fail_ == Fail::Sync) return fail(Errc::FlushFailed, EIO);
    return inner_->sync();
  }
  Result<uint64_t> size() override { return inner_->size(); }
  Result<void> truncate(uint64_t s) override { return inner_->truncate(s); }
  Result<void> preallocate(uint64_t o, uint64_t l) override { return inner_->preallocate(o, l); }
  int fd() const override { return -1; }

 private:
  std::unique_ptr<HostFile> inner_;
  Fail fail_;
};

TEST(HeaderErrors, WritingHeaderIsToldApartFromSyncingHeader) {
  TempDir dir;
  std::string img = dir.file("h.qcow2");
  SH_OK("qemu-img create -q -f qcow2 '" + img + "' 1M");
  for (auto [mode, code] : {std::pair{FaultyFile::Fail::HeaderWrite, Errc::WritingHeader},
                            std::pair{FaultyFile::Fail::Sync, Errc::SyncingHeader}}) {
    auto file = open_host_file(img, false);
    ASSERT_TRUE(file.has_value());
    // A writable v3 open sets and syncs the dirty bit: the first header update.
    auto engine = Engine::open(std::make_unique<FaultyFile>(std::move(*file), mode), img, EngineOptions{});
    ASSERT_FALSE(engine.has_value());
    EXPECT_EQ(engine.error().code, code) << engine.error().message();
    EXPECT_EQ(engine.error().sys_errno, EIO);
  }
}

TEST(DirtyBit, SetWhileOpenClearedOnCloseV2Untouched) {
  TempDir dir;
  std::string img = dir.file("d.qcow2");
  SH_OK("qemu-img create -q -f qcow2 '" + img + "' 1M");
  auto disk = open_image(img);
  ASSERT_NE(disk, nullptr);
  EXPECT_EQ(peek_be64(img, kIncompat) & kIncompatDirty, kIncompatDirty);
  ASSERT_TRUE(disk->close().has_value());
  EXPECT_EQ(peek_be64(img, kIncompat) & kIncompatDirty, 0u);
  disk.reset();
  // Read-only opens leave the header alone.
  poke_be64(img, kIncompat, kIncompatDirty);
  { auto ro = open_image(img, true); ASSERT_NE(ro, nullptr); }
  EXPECT_EQ(peek_be64(img, kIncompat), kIncompatDirty);
  poke_be64(img, kIncompat, 0);
  // v2 has no dirty bit: the header is not rewritten at all.
  std::string v2 = dir.file("v2.qcow2");
  SH_OK("qemu-img create -q -f qcow2 -o compat=0.10 '" + v2 + "' 1M");
  auto before = slurp(v2);
  {
    auto d = open_image(v2);
    ASSERT_NE(d, nullptr);
    ASSERT_TRUE(d->close().has_value());
  }
  auto after = slurp(v2);
  EXPECT_TRUE(std::equal(before.begin(), before.begin() + 72, after.begin()));
}

TEST(DirtyBit, OpenRebuildsRefcountsWithAWarning) {
  TempDir dir;
  std::string img = dir.file("d.qcow2");
  SH_OK("qemu-img create -q -f qcow2 '" + img + "' 10M");
  SH_OK("qemu-io -f qcow2 -c 'write -P 5 0 1M' '" + img + "'");
  // Refcounts as a crash may leave them: one leaked, one too high.
  SH_OK("truncate -s +65536 '" + img + "'");
  poke_be16(img, 0x20000 + 2 * 21, 1);
  poke_be16(img, 0x20000 + 2 * 6, 2);
  poke_be64(img, kIncompat, kIncompatDirty);
  auto file = open_host_file(img, false);
  ASSERT_TRUE(file.has_value());
  std::vector<std::string> warnings;
  EngineOptions o;
  o.warn = [&](const std::string& w) { warnings.push_back(w); };
  auto engine = Engine::open(std::move(*file), img, o);
  ASSERT_TRUE(engine.has_value()) << engine.error().message();
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("rebuilding refcounts"), std::string::npos);
  ASSERT_TRUE((*engine)->close().has_value());
  engine->reset();
  SH_OK("qemu-img check -q '" + img + "'");
  EXPECT_EQ(peek_be64(img, kIncompat), 0u);
  SH_OK("qemu-io -f qcow2 -c 'read -P 5 0 1M' '" + img + "'");
}

TEST(Locking, WritersExcludeEachOtherReadersShare) {
  TempDir dir;
  std::string img = dir.file("l.qcow2");
  SH_OK("qemu-img create -q -f qcow2 '" + img + "' 1M");
  {
    auto first = open_image(img);
    ASSERT_NE(first, nullptr);
    OpenOptions o;
    o.path = img;
    auto second = open_disk(o);
    ASSERT_FALSE(second.has_value());
    EXPECT_EQ(second.error().code, Errc::LockConflict);
    EXPECT_NE(second.error().message().find(img), std::string::npos);
  }
  auto r1 = open_image(img, true);
  auto r2 = open_image(img, true);
  EXPECT_NE(r1, nullptr);
  EXPECT_NE(r2, nullptr);
}

TEST(CorruptBit, WritableOpenRefusedReadOnlyAllowed) {
  TempDir dir;
  std::string img = dir.file("c.qcow2");
  SH_OK("qemu-img create -q -f qcow2 '" + img + "' 1M");
  poke_be64(img, kIncompat, kIncompatCorrupt);
  OpenOptions o;
  o.path = img;
  auto disk = open_disk(o);
  ASSERT_FALSE(disk.has_value());
  EXPECT_EQ(disk.error().code, Errc::CorruptImage);
  EXPECT_NE(disk.error().message().find("read-only"), std::string::npos);
  o.read_only = true;
  EXPECT_TRUE(open_disk(o).has_value());
}

TEST(CorruptBit, SetWhenAnUnalignedDataOffsetIsFound) {
  TempDir dir;
  std::string img = dir.file("c.qcow2");
  SH_OK("qemu-img create -q -f qcow2 '" + img + "' 1M");
  SH_OK("qemu-io -f qcow2 -c 'write -P 1 0 64k' '" + img + "'");
  // L1 at 0x30000, L2 at 0x40000: entry 0 -> data at 0x50000; unalign it.
  poke_be64(img, 0x40000, kOflagCopied | 0x50200);
  auto disk = open_image(img);
  ASSERT_NE(disk, nullptr);
  auto ctx = disk->make_io_context(1);
  ASSERT_TRUE(ctx.has_value());
  std::vector<uint8_t> buf(4096);
  auto r = pread_disk(**ctx, 0, buf);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, Errc::CorruptImage);
  ctx->reset();
  disk.reset();
  EXPECT_EQ(peek_be64(img, kIncompat) & kIncompatCorrupt, kIncompatCorrupt);
  std::string info;
  ASSERT_EQ(sh("qemu-img info '" + img + "'", &info), 0);
  EXPECT_NE(info.find("corrupt: true"), std::string::npos) << info;
}

TEST(Autoclear, ClearedOnWritableOpenPreservedReadOnly) {
  TempDir dir;
  std::string img = dir.file("a.qcow2");
  SH_OK("qemu-img create -q -f qcow2 '" + img + "' 1M");
  poke_be64(img, kAutoclear, 1);
  { auto ro = open_image(img, true); ASSERT_NE(ro, nullptr); }
  EXPECT_EQ(peek_be64(img, kAutoclear), 1u);
  { auto rw = open_image(img); ASSERT_NE(rw, nullptr); }
  EXPECT_EQ(peek_be64(img, kAutoclear), 0u);
}

// tern-img check's exit status and repairs agree with qemu-img check.
TEST(Check, VerdictsAgreeWithQemu) {
  TempDir dir;
  std::string clean = dir.file("clean.qcow2");
  SH_OK("qemu-img create -q -f qcow2 '" + clean + "' 10M");
  SH_OK("qemu-io -f qcow2 -c 'write 0 1M' '" + clean + "'");
  auto status = [](const std::string& cmd) { return sh(cmd + " >/dev/null").status; };
  EXPECT_EQ(status(tern_img() + " check '" + clean + "'"), 0);
  EXPECT_EQ(status("qemu-img check '" + clean + "'"), 0);

  std::string leaky = dir.file("leaky.qcow2");
  SH_OK("cp '" + clean + "' '" + leaky + "' && truncate -s +65536 '" + leaky + "'");
  poke_be16(leaky, 0x20000 + 2 * 21, 1);
  EXPECT_EQ(status(tern_img() + " check '" + leaky + "'"), 3);
  EXPECT_EQ(status("qemu-img check '" + leaky + "'"), 3);

  std::string broken = dir.file("broken.qcow2");
  SH_OK("cp '" + clean + "' '" + broken + "'");
  poke_be16(broken, 0x20000 + 2 * 7, 0);  // a data cluster counted 0 times
  EXPECT_EQ(status(tern_img() + " check '" + broken + "'"), 2);
  EXPECT_EQ(status("qemu-img check '" + broken + "'"), 2);

  EXPECT_EQ(status(tern_img() + " check -r leaks '" + leaky + "'"), 0);
  EXPECT_EQ(status("qemu-img check '" + leaky + "'"), 0);
  EXPECT_EQ(status(tern_img() + " check -r leaks '" + broken + "'"), 2);
  EXPECT_EQ(status(tern_img() + " check -r all '" + broken + "'"), 0);
  EXPECT_EQ(status("qemu-img check '" + broken + "'"), 0);
  std::string json;
  ASSERT_EQ(sh(tern_img() + " check --output json '" + clean + "'", &json), 0);
  EXPECT_NE(json.find("\"check-errors\": 0"), std::string::npos) << json;
}

// A writer killed with SIGKILL at random points: every reopen works (dirty
// bit, rebuild), flushed data is intact, and qemu-img check is clean after
// Tern reopens and closes the image. The kill point does not depend on how
// busy the machine is: every third writer is killed with the image open
// before it writes anything, every third after its first flush
// was reported, the rest after a random delay. A block must hold at least
// the last round actually flushed, in this iteration or an earlier one.
TEST(Crash, KilledWriterLosesNothingFlushed) {
  TempDir dir;
  std::string img = dir.file("k.qcow2");
  CreateOptions c;
  c.path = img;
  c.size = 4 << 20;
  c.cluster_size = 16384;
  ASSERT_TRUE(create_image(c).has_value());
  constexpr uint64_t kBlocks = 48;
  constexpr uint64_t kBlock = 4096;
  int iterations = 12;
  if (const char* env = std::getenv("TERN_CRASH_ITERATIONS")) iterations = std::atoi(env);
  std::mt19937 rng(1234);
  uint64_t base_round = 0;
  uint64_t last_flushed = 0;  // the newest round any writer reported flushed
  int iterations_with_a_flush = 0;
  for (int it = 0; it < iterations; ++it) {
    int report[2], go[2];
    ASSERT_EQ(::pipe(report), 0);
    ASSERT_EQ(::pipe(go), 0);
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      // The writer: rounds of writes to every block, each ended by a flush
      // whose completion is reported to the parent.
      ::close(report[0]);
      OpenOptions o;
      o.path = img;
      auto disk = open_disk(o);
      if (!disk) ::_exit(10);
      auto ctx = (*disk)->make_io_context(8);
      if (!ctx) ::_exit(11);
      uint64_t opened = 0;  // "open", before any write
      if (::write(report[1], &opened, sizeof opened) != sizeof opened) ::_exit(15);
      char start;
      if (::read(go[0], &start, 1) != 1) ::_exit(16);  // the parent's go
      std::vector<uint8_t> buf(kBlock);
      for (uint64_t round = base_round + 1;; ++round) {
        for (uint64_t b = 0; b < kBlocks; ++b) {
          uint64_t block = (b * 7 + round) % kBlocks;
          uint64_t offset = block * kBlock * 11 % (4 << 20) / kBlock * kBlock;
          for (size_t i = 0; i < kBlock; i += 16) {
            std::memcpy(buf.data() + i, &round, 8);
            std::memcpy(buf.data() + i + 8, &offset, 8);
          }
          if (!pwrite_disk(**ctx, offset, buf)) ::_exit(12);
          if (round % 3 == 0 && b % 16 == 0) {  // discard churn frees clusters
            if (!simple_op(**ctx, Op::Discard, (offset + (1 << 20)) % (4 << 20), 16384)) ::_exit(14);
          }
        }
        if (!simple_op(**ctx, Op::Flush)) ::_exit(13);
        if (::write(report[1], &round, sizeof round) != sizeof round) ::_exit(15);
      }
    }
    ::close(report[1]);
    ::close(go[0]);
    // Reports: 0 once the image is open, then each flushed round.
    uint64_t flushed = last_flushed, r;
    bool flushed_here = false;
    auto next_report = [&] {
      if (::read(report[0], &r, sizeof r) != sizeof r) return false;
      if (r != 0) {
        flushed = r;
        flushed_here = true;
      }
      return true;
    };
    uint32_t delay_us = std::uniform_int_distribution<uint32_t>(2000, 60000)(rng);
    bool opened = next_report();
    // Every third writer dies with the image open and nothing written.
    if (opened && it % 3 != 0) opened = ::write(go[1], "g", 1) == 1;
    bool reported = opened && (it % 3 != 1 || next_report());
    if (opened && it % 3 == 2) ::usleep(delay_us);
    ::kill(pid, SIGKILL);
    ::close(go[1]);
    EXPECT_TRUE(opened) << "the writer did not open the image";
    EXPECT_TRUE(reported) << "the writer did not flush";
    int wstatus = 0;
    ::waitpid(pid, &wstatus, 0);
    ASSERT_TRUE(WIFSIGNALED(wstatus)) << "writer exited with " << WEXITSTATUS(wstatus);
    while (next_report()) {
    }
    ::close(report[0]);
    if (flushed_here) ++iterations_with_a_flush;
    // Reopen: must work, rebuild, and show every block at least as new as
    // the last flushed round.
    {
      auto disk = open_image(img);
      ASSERT_NE(disk, nullptr) << "iteration " << it;
      auto ctx = disk->make_io_context(4);
      ASSERT_TRUE(ctx.has_value());
      std::vector<uint8_t> buf(kBlock);
      for (uint64_t b = 0; b < kBlocks; ++b) {
        uint64_t offset = b * kBlock * 11 % (4 << 20) / kBlock * kBlock;
        ASSERT_TRUE(pread_disk(**ctx, offset, buf).has_value());
        uint64_t round = 0, where = 0;
        std::memcpy(&round, buf.data(), 8);
        std::memcpy(&where, buf.data() + 8, 8);
        if (flushed > 0) {
          ASSERT_GE(round, flushed) << "iteration " << it << " block " << b;
          ASSERT_EQ(where, offset);
        }
      }
      ctx->reset();
      ASSERT_TRUE(disk->close().has_value());
    }
    std::string out;
    ASSERT_EQ(sh("qemu-img check '" + img + "'", &out), 0) << "iteration " << it << "\n" << out;
    last_flushed = flushed;
    base_round = std::max(base_round, flushed) + 1000;  // rounds stay increasing across iterations
  }
  EXPECT_GE(iterations_with_a_flush, iterations / 3) << "too few iterations checked flushed data";
}

}  // namespace
}  // namespace tern::block::qcow2::test

namespace tern::block::qcow2::test {
namespace {

// Hostile tables: each is refused or fails with an error, never a crash.
TEST(Hostile, L2EntriesPointingAtMetadataAreRefusedOnWrite) {
  TempDir dir;
  std::string img = dir.file("m.qcow2");
  SH_OK("qemu-img create -q -f qcow2 '" + img + "' 1M");
  SH_OK("qemu-io -f qcow2 -c 'write -P 1 0 128k' '" + img + "'");
  // Layout: refcount table 0x10000, block 0x20000, L1 0x30000, L2 0x40000.
  const uint64_t targets[] = {0x30000, 0x10000, 0x40000, 0x20000};
  for (uint64_t target : targets) {
    SCOPED_TRACE(target);
    std::string copy = dir.file("copy.qcow2");
    SH_OK("cp '" + img + "' '" + copy + "'");
    poke_be64(copy, 0x40000, kOflagCopied | target);
    auto disk = open_image(copy);
    ASSERT_NE(disk, nullptr);
    auto ctx = disk->make_io_context(1);
    ASSERT_TRUE(ctx.has_value());
    std::vector<uint8_t> buf(4096, 0xee);
    // Load the metadata into the caches the way normal I/O does.
    ASSERT_TRUE(pread_disk(**ctx, 65536, buf).has_value());
    auto r = pwrite_disk(**ctx, 0, buf);
    ASSERT_FALSE(r.has_value());
    EXPECT_EQ(r.error().code, Errc::CorruptImage);
  }
}

TEST(Hostile, TruncatedAndOutOfRangeImagesFailCleanly) {
  TempDir dir;
  std::string img = dir.file("t.qcow2");
  SH_OK("qemu-img create -q -f qcow2 '" + img + "' 4M");
  SH_OK("qemu-io -f qcow2 -c 'write -P 1 0 1M' '" + img + "'");
  auto try_all = [&](const std::string& path) {
    OpenOptions o;
    o.path = path;
    auto disk = open_disk(o);
    if (!disk) return;  // refused: fine
    auto ctx = (*disk)->make_io_context(2);
    ASSERT_TRUE(ctx.has_value());
    std::vector<uint8_t> buf(65536, 0x5a);
    for (uint64_t off = 0; off < (*disk)->size(); off += 512 * 1024) {
      (void)pread_disk(**ctx, off, buf);
      (void)pwrite_disk(**ctx, off, buf);
    }
    (void)simple_op(**ctx, Op::Flush);
  };
  for (uint64_t keep : {100ull, 70000ull, 200000ull, 300000ull}) {
    std::string cut = dir.file("cut.qcow2");
    SH_OK("head -c " + std::to_string(keep) + " '" + img + "' > '" + cut + "'");
    try_all(cut);
  }
  std::string far = dir.file("far.qcow2");
  SH_OK("cp '" + img + "' '" + far + "'");
  poke_be64(far, 0x30000, kOflagCopied | (1ull << 40));  // L2 table far past the end
  poke_be64(far, 0x10000, 1ull << 41);                   // refcount block far past the end
  try_all(far);
  // Nothing was written out there.
  EXPECT_LT(std::filesystem::file_size(far), 64ull << 20);
}

}  // namespace
}  // namespace tern::block::qcow2::test

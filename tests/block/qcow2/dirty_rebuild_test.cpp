// The refcount rebuild of a dirty image, and check(), on a hostile image
// (issue 12, item 4): a 320 KiB v3 image, l1_size 256, every L1 entry
// naming one L2 table whose 8192 entries all point past the end of the
// file. Once kept one message per bad entry (2 million strings, ~300 MB);
// now errors are counted, only the first few messages kept, and the work
// is bounded by the file's size. Its own binary, so the peak RSS measured
// is this test's.
#include <gtest/gtest.h>
#include <sys/resource.h>

#include <fstream>

#include "block/qcow2/big_endian.h"
#include "block/qcow2/engine.h"
#include "block/qcow2/format.h"
#include "block/qcow2/host_file.h"
#include "tests/block/qcow2/qcow2_test_util.h"

namespace tern::block::qcow2::test {
namespace {

constexpr uint64_t kCluster = 64 << 10;
constexpr uint64_t kL1 = 0x30000;  // qemu-img's layout for 64 KiB clusters
constexpr uint64_t kL2 = 0x40000;
constexpr uint32_t kL1Size = 256;

void make_hostile(const std::string& path, bool dirty) {
  SH_OK("qemu-img create -q -f qcow2 -o cluster_size=65536 '" + path + "' 1G");
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  auto put = [&](uint64_t at, const uint8_t* p, size_t n) {
    f.seekp(static_cast<std::streamoff>(at));
    f.write(reinterpret_cast<const char*>(p), static_cast<std::streamsize>(n));
  };
  uint8_t b8[8];
  uint8_t b4[4];
  store_be<uint32_t>(b4, kL1Size);
  put(36, b4, 4);  // l1_size
  store_be<uint64_t>(b8, dirty ? kIncompatDirty : 0);
  put(72, b8, 8);  // incompatible_features
  std::vector<uint8_t> l1(kL1Size * 8);
  for (uint32_t i = 0; i < kL1Size; ++i) store_be<uint64_t>(l1.data() + i * 8, kL2 | kOflagCopied);
  put(kL1, l1.data(), l1.size());
  std::vector<uint8_t> l2(kCluster);
  for (uint64_t i = 0; i < kCluster / 8; ++i) store_be<uint64_t>(l2.data() + i * 8, (uint64_t{1} << 40) | kOflagCopied);
  put(kL2, l2.data(), l2.size());
}

long peak_rss_kib() {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  return u.ru_maxrss;
}

TEST(DirtyRebuild, CheckOfHostileImageCountsErrorsAndKeepsFewMessages) {
  TempDir dir;
  std::string img = dir.file("h.qcow2");
  make_hostile(img, false);
  const long before = peak_rss_kib();
  auto file = open_host_file(img, true);
  ASSERT_TRUE(file.has_value());
  EngineOptions o;
  o.read_only = true;
  auto engine = Engine::open(std::move(*file), img, o);
  ASSERT_TRUE(engine.has_value()) << engine.error().message();
  auto res = (*engine)->check(Repair::None);
  ASSERT_TRUE(res.has_value()) << res.error().message();
  // Every bad reference counted, 256 times 8192 of them...
  EXPECT_GE(res->corruptions, uint64_t{kL1Size} * (kCluster / 8));
  // ...but only a few lines kept.
  EXPECT_LE(res->messages.size(), kMaxCheckMessages + 1);  // + "N more findings not listed"
  EXPECT_GT(res->messages_dropped, 0u);
  const long grown_mib = (peak_rss_kib() - before) / 1024;
  EXPECT_LT(grown_mib, 32) << "check of a 320 KiB image grew the peak RSS by " << grown_mib << " MiB";
}

TEST(DirtyRebuild, RebuildOfHostileDirtyImageFailsBoundedly) {
  TempDir dir;
  std::string img = dir.file("d.qcow2");
  make_hostile(img, true);
  const long before = peak_rss_kib();
  auto file = open_host_file(img, false);
  ASSERT_TRUE(file.has_value());
  EngineOptions o;
  std::vector<std::string> warnings;
  o.warn = [&](const std::string& w) { warnings.push_back(w); };
  auto engine = Engine::open(std::move(*file), img, o);
  ASSERT_FALSE(engine.has_value()) << "references past the end cannot be repaired";
  EXPECT_EQ(engine.error().code, Errc::CorruptImage) << engine.error().message();
  EXPECT_LE(warnings.size(), 4u);
  const long grown_mib = (peak_rss_kib() - before) / 1024;
  EXPECT_LT(grown_mib, 32) << "rebuild of a 320 KiB image grew the peak RSS by " << grown_mib << " MiB";
}

}  // namespace
}  // namespace tern::block::qcow2::test

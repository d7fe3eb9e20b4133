// Replays the emulation fallback's fuzz corpus kept in the tree
// (tests/fuzz/emulation_regressions/: seeds and every finding once fixed),
// then a fixed sweep of pseudo-random inputs, through the fuzz body in the
// normal and sanitizer builds. A finding aborts the test binary.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>

#include "tests/fuzz/emulation_fuzz_body.h"
#include "tests/support/support.h"

namespace tern::vmm {
namespace {

TEST(EmulationFuzzRegressions, ReplayWithoutFindings) {
  int replayed = 0;
  for (const auto& entry : std::filesystem::directory_iterator(tern::test_support::source_path("tests/fuzz/emulation_regressions"))) {
    std::ifstream in(entry.path(), std::ios::binary);
    std::vector<uint8_t> data(std::istreambuf_iterator<char>(in), {});
    SCOPED_TRACE(entry.path().string());
    fuzz::exercise(data.data(), data.size());
    ++replayed;
  }
  EXPECT_GT(replayed, 0);
}

TEST(EmulationFuzzRegressions, PseudoRandomSweep) {
  std::mt19937_64 rng(22);
  std::vector<uint8_t> data;
  for (int i = 0; i < 3000; ++i) {
    data.resize(rng() % 1024);
    for (auto& b : data) b = static_cast<uint8_t>(rng());
    fuzz::exercise(data.data(), data.size());
  }
}

}  // namespace
}  // namespace tern::vmm

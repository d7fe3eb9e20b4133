// Replays every input the fuzzer ever found (tests/fuzz/regressions/)
// through the fuzz body in the normal (and sanitizer) builds.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>

#include "tests/fuzz/qcow2_fuzz_body.h"
#include "tests/support/support.h"

namespace tern::block::qcow2::test {
namespace {

TEST(FuzzRegressions, ReplayWithoutCrashing) {
  int replayed = 0;
  for (const auto& entry : std::filesystem::directory_iterator(tern::test_support::source_path("tests/fuzz/regressions"))) {
    std::ifstream in(entry.path(), std::ios::binary);
    std::vector<uint8_t> data(std::istreambuf_iterator<char>(in), {});
    fuzz::exercise(data.data(), data.size(), false);
    fuzz::exercise(data.data(), data.size(), true);
    fuzz::exercise_dirty(data.data(), data.size());
    fuzz::exercise_backing(data.data(), data.size());
    ++replayed;
  }
  EXPECT_GT(replayed, 0);
}

}  // namespace
}  // namespace tern::block::qcow2::test

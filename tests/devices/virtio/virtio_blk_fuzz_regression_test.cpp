// Replays every input of the virtio-blk fuzz corpus kept in the tree
// (tests/fuzz/virtio_blk_regressions/: seeds and every finding once fixed)
// through the fuzz body in the normal and sanitizer builds. A finding
// aborts the test binary.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>

#include "tests/fuzz/virtio_blk_fuzz_body.h"
#include "tests/support/support.h"

namespace tern::devices {
namespace {

TEST(VirtioBlkFuzzRegressions, ReplayWithoutFindings) {
  int replayed = 0;
  for (const auto& entry :
       std::filesystem::directory_iterator(tern::test_support::source_path("tests/fuzz/virtio_blk_regressions"))) {
    std::ifstream in(entry.path(), std::ios::binary);
    std::vector<uint8_t> data(std::istreambuf_iterator<char>(in), {});
    SCOPED_TRACE(entry.path().string());
    fuzz::exercise(data.data(), data.size());
    ++replayed;
  }
  EXPECT_GT(replayed, 0);
}

}  // namespace
}  // namespace tern::devices

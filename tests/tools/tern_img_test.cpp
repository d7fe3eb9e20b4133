// tern-img on QCOW2 images: create, info (human and JSON, as qemu-img
// prints them), convert and resize, checked with qemu-img.
#include <gtest/gtest.h>

#include <cstdlib>
#include <sstream>

#include "tests/block/qcow2/qcow2_test_util.h"

namespace tern::block::qcow2::test {
namespace {

// qemu-img info's output minus the lines that name the file or measure it.
std::string info_text(const std::string& cmd) {
  std::string out;
  EXPECT_EQ(sh(cmd, &out), 0) << cmd << "\n" << out;
  std::string kept, line;
  std::istringstream lines(out);
  while (std::getline(lines, line)) {
    if (line.starts_with("image:") || line.starts_with("disk size:") ||
        line.find("\"filename\"") != std::string::npos ||
        line.find("\"actual-size\"") != std::string::npos) {
      continue;
    }
    kept += line + "\n";
  }
  return kept;
}

TEST(TernImg, CreateWithOptionsAndInfoMatchQemu) {
  TempDir dir;
  std::string base = dir.file("base.qcow2");
  std::string top = dir.file("top.qcow2");
  SH_OK(tern_img() + " create -f qcow2 -o cluster_size=4096,refcount_bits=8,compression_type=zstd '" +
        base + "' 10M");
  SH_OK(tern_img() + " create -f qcow2 -o backing_file=base.qcow2,backing_fmt=qcow2 '" + top + "'");
  SH_OK(tern_img() + " create -f qcow2 -o compat=0.10 '" + dir.file("v2.qcow2") + "' 1G");
  for (const char* name : {"base.qcow2", "top.qcow2", "v2.qcow2"}) {
    std::string img = dir.file(name);
    SH_OK("qemu-img check -q '" + img + "'");
    EXPECT_EQ(info_text(tern_img() + " info '" + img + "'"), info_text("qemu-img info '" + img + "'"));
    EXPECT_EQ(info_text(tern_img() + " info --output json '" + img + "'"),
              info_text("qemu-img info --output json '" + img + "'"));
  }
}

TEST(TernImg, ConvertAndResize) {
  TempDir dir;
  std::string src = dir.file("src.qcow2");
  SH_OK("qemu-img create -q -f qcow2 -o cluster_size=16384 '" + src + "' 20M");
  SH_OK("qemu-io -f qcow2 -c 'write -P 3 1M 5M' -c 'write -P 9 15M 100k' '" + src + "'");
  std::string out;
  ASSERT_EQ(sh(tern_img() + " convert -p -O qcow2 '" + src + "' '" + dir.file("d.qcow2") + "'", &out), 0);
  EXPECT_NE(out.find("(100.00/100%)"), std::string::npos) << out;
  SH_OK("qemu-img compare -q '" + src + "' '" + dir.file("d.qcow2") + "'");
  SH_OK("qemu-img check -q '" + dir.file("d.qcow2") + "'");
  SH_OK(tern_img() + " convert -O raw '" + src + "' '" + dir.file("d.raw") + "'");
  SH_OK("qemu-img compare -q -F raw '" + src + "' '" + dir.file("d.raw") + "'");
  // Grow by a lot (the L1 table grows), then refuse a shrink.
  SH_OK(tern_img() + " resize '" + dir.file("d.qcow2") + "' +3G");
  SH_OK("qemu-img check -q '" + dir.file("d.qcow2") + "'");
  ASSERT_EQ(sh("qemu-img info --output json '" + dir.file("d.qcow2") + "'", &out), 0);
  EXPECT_NE(out.find("\"virtual-size\": " + std::to_string((20ull << 20) + (3ull << 30))), std::string::npos);
  EXPECT_NE(sh(tern_img() + " resize '" + dir.file("d.qcow2") + "' 10M", &out), 0);
  EXPECT_NE(out.find("shrinking"), std::string::npos) << out;
  // An image with a backing file is not resized.
  SH_OK("qemu-img create -q -f qcow2 -b src.qcow2 -F qcow2 '" + dir.file("o.qcow2") + "'");
  EXPECT_NE(sh(tern_img() + " resize '" + dir.file("o.qcow2") + "' +1M", &out), 0);
  EXPECT_NE(out.find("backing file"), std::string::npos) << out;
}

TEST(TernImg, IoCommandsMatchQemuIo) {
  TempDir dir;
  std::string a = dir.file("a.qcow2");
  std::string b = dir.file("b.qcow2");
  const std::string script =
      "-c 'write -P 0x41 0 100k' -c 'write -z 64k 64k' -c 'write -P 7 1M 4k' -c 'discard 1M 64k' "
      "-c 'write -z -u 200k 300k' -c 'flush'";
  SH_OK("qemu-img create -q -f qcow2 '" + a + "' 4M");
  SH_OK("qemu-img create -q -f qcow2 '" + b + "' 4M");
  SH_OK(tern_img() + " io " + script + " '" + a + "'");
  SH_OK("qemu-io -f qcow2 " + script + " '" + b + "'");
  SH_OK("qemu-img compare -q '" + a + "' '" + b + "'");
  SH_OK("qemu-img check -q '" + a + "'");
  SH_OK(tern_img() + " io -r -c 'read -P 0x41 0 64k' -c 'read -P 0 64k 64k' '" + a + "'");
  std::string out;
  EXPECT_NE(sh(tern_img() + " io -r -c 'read -P 0x42 0 4k' '" + a + "'", &out), 0);
  EXPECT_NE(out.find("Pattern verification failed"), std::string::npos) << out;
}

}  // namespace
}  // namespace tern::block::qcow2::test

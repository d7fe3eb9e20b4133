// Backing chains from hostile images (issue 12, item 3): a loop (an image
// naming itself, or two naming each other) and an over-long chain are
// refused with an error that names the chain, instead of recursing until
// EMFILE or a stack overflow; a block device or FIFO as backing "file" is
// refused unless asked for; relative names are relative to the image's
// directory. tern-img's verbs follow the same rules.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cstdlib>

#include "block/chain.h"
#include "block/image.h"
#include "block/qcow2/qcow2_disk.h"
#include "tests/block/qcow2/qcow2_test_util.h"

namespace tern::block::qcow2::test {
namespace {

Result<std::unique_ptr<DiskFile>> open_chain(const std::string& path, bool allow_block = false) {
  OpenOptions o;
  o.path = path;
  o.read_only = true;
  o.allow_backing = true;
  o.allow_block_backing = allow_block;
  return open_disk(o);
}

// Points `image`'s header at `backing` without opening anything.
void set_backing(const std::string& image, const std::string& backing, const std::string& fmt) {
  SH_OK("qemu-img rebase -u -f qcow2 -b '" + backing + "' -F " + fmt + " '" + image + "'");
}

TEST(BackingChain, ImageNamingItselfIsALoopNamedInTheError) {
  TempDir dir;
  std::string a = dir.file("a.qcow2");
  SH_OK("qemu-img create -q -f qcow2 '" + a + "' 1M");
  set_backing(a, "a.qcow2", "qcow2");
  auto disk = open_chain(a);
  ASSERT_FALSE(disk.has_value());
  EXPECT_EQ(disk.error().code, Errc::BackingLoop) << disk.error().message();
  EXPECT_NE(disk.error().message().find("a.qcow2 -> " + a), std::string::npos) << disk.error().message();
}

TEST(BackingChain, TwoImagesNamingEachOtherAreALoop) {
  TempDir dir;
  std::string a = dir.file("a.qcow2");
  std::string b = dir.file("b.qcow2");
  SH_OK("qemu-img create -q -f qcow2 '" + a + "' 1M");
  SH_OK("qemu-img create -q -f qcow2 '" + b + "' 1M");
  set_backing(a, "b.qcow2", "qcow2");
  set_backing(b, a, "qcow2");  // absolute, so the loop is seen through another name
  auto disk = open_chain(a);
  ASSERT_FALSE(disk.has_value());
  EXPECT_EQ(disk.error().code, Errc::BackingLoop) << disk.error().message();
  EXPECT_NE(disk.error().message().find(b), std::string::npos) << disk.error().message();
}

TEST(BackingChain, SixteenBackingFilesOpenSeventeenAreRefused) {
  TempDir dir;
  // img0 is the bottom; img<k> has img<k-1> as its backing file.
  SH_OK("qemu-img create -q -f qcow2 '" + dir.file("img0.qcow2") + "' 1M && qemu-io -f qcow2 -c 'write -P 0x42 0 4k' '" +
        dir.file("img0.qcow2") + "'");
  for (int k = 1; k <= 17; ++k) {
    SH_OK("qemu-img create -q -f qcow2 -b img" + std::to_string(k - 1) + ".qcow2 -F qcow2 '" +
          dir.file("img" + std::to_string(k) + ".qcow2") + "'");
  }
  {
    auto ok = open_chain(dir.file("img16.qcow2"));  // 16 backing files below it
    ASSERT_TRUE(ok.has_value()) << ok.error().message();
    auto ctx = (*ok)->make_io_context(2);
    ASSERT_TRUE(ctx.has_value());
    std::vector<uint8_t> buf(4096);
    ASSERT_TRUE(pread_disk(**ctx, 0, buf).has_value());
    EXPECT_EQ(buf, std::vector<uint8_t>(4096, 0x42)) << "data from the bottom of the chain";
  }
  auto deep = open_chain(dir.file("img17.qcow2"));
  ASSERT_FALSE(deep.has_value());
  EXPECT_EQ(deep.error().code, Errc::BackingChainTooDeep) << deep.error().message();
  EXPECT_NE(deep.error().message().find("img17.qcow2 -> "), std::string::npos) << deep.error().message();
}

TEST(BackingChain, RelativeNamesAreRelativeToTheImagesDirectory) {
  TempDir dir;
  std::filesystem::create_directories(dir.file("sub"));
  std::string base = dir.file("sub/base.raw");
  std::string top = dir.file("sub/top.qcow2");
  SH_OK("qemu-img create -q -f raw '" + base + "' 1M && qemu-io -f raw -c 'write -P 0x17 0 4k' '" + base + "'");
  SH_OK("qemu-img create -q -f qcow2 -b base.raw -F raw '" + top + "'");
  // A file of the same name in the working directory must not be used.
  std::string cwd = std::filesystem::current_path();
  std::filesystem::current_path(dir.file(""));
  SH_OK("qemu-img create -q -f raw base.raw 1M");
  auto disk = open_chain("sub/top.qcow2");
  std::filesystem::current_path(cwd);
  ASSERT_TRUE(disk.has_value()) << disk.error().message();
  auto ctx = (*disk)->make_io_context(2);
  ASSERT_TRUE(ctx.has_value());
  std::vector<uint8_t> buf(4096);
  ASSERT_TRUE(pread_disk(**ctx, 0, buf).has_value());
  EXPECT_EQ(buf, std::vector<uint8_t>(4096, 0x17));
}

TEST(BackingChain, BlockDeviceBackingOnlyWhenAllowed) {
  TempDir dir;
  std::string dev = dir.file("blk");
  if (::mknod(dev.c_str(), S_IFBLK | 0600, makedev(7, 0)) != 0) GTEST_SKIP() << "cannot make a block device node";
  int fd = ::open(dev.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) GTEST_SKIP() << "block device 7:0 cannot be opened here";
  ::close(fd);
  std::string top = dir.file("top.qcow2");
  SH_OK("qemu-img create -q -f qcow2 '" + top + "' 1M");
  set_backing(top, "blk", "raw");
  auto refused = open_chain(top);
  ASSERT_FALSE(refused.has_value());
  EXPECT_EQ(refused.error().code, Errc::BackingIsDevice) << refused.error().message();
  EXPECT_NE(refused.error().message().find(dev), std::string::npos) << refused.error().message();
  auto allowed = open_chain(top, true);
  EXPECT_TRUE(allowed.has_value()) << allowed.error().message();
}

TEST(BackingChain, FifoBackingIsRefusedWithoutBlocking) {
  TempDir dir;
  std::string fifo = dir.file("pipe");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  std::string top = dir.file("top.qcow2");
  SH_OK("qemu-img create -q -f qcow2 '" + top + "' 1M");
  set_backing(top, "pipe", "raw");
  auto refused = open_chain(top);
  ASSERT_FALSE(refused.has_value());
  EXPECT_EQ(refused.error().code, Errc::NotAFile) << refused.error().message();
}

// walk_backing_chain (block/chain.h): what the sandbox grants and tern-img
// rebase checks, by the same rules as opening the chain.
std::vector<std::string> walked(const std::vector<BackingFile>& files) {
  std::vector<std::string> paths;
  for (const auto& f : files) paths.push_back(f.path + (f.type == ImageType::Qcow2 ? " qcow2" : " raw"));
  return paths;
}

Result<void> walk(const std::string& image, std::vector<BackingFile>& files,
                  std::optional<std::string> backing_file = std::nullopt, const std::string& backing_format = "") {
  BackingWalk w;
  w.image = image;
  w.backing_file = std::move(backing_file);
  w.backing_format = backing_format;
  return walk_backing_chain(w, files);
}

TEST(BackingChain, TheWalkFindsWhatTheOpenFollows) {
  TempDir dir;
  // top -> mid (format probed) -> base.qcow2 recorded as raw: its own
  // backing file (which does not exist) is never looked for.
  SH_OK("cd '" + dir.file("") + "' && qemu-img create -q -f qcow2 -b nowhere.qcow2 -F qcow2 -u base.qcow2 1M" +
        " && qemu-img create -q -f qcow2 -b base.qcow2 -F raw mid.qcow2 1M" +
        " && qemu-img create -q -f qcow2 top.qcow2 1M");
  ASSERT_TRUE(set_backing_file(dir.file("top.qcow2"), "mid.qcow2", "").has_value());
  std::vector<BackingFile> files;
  auto r = walk(dir.file("top.qcow2"), files);
  ASSERT_TRUE(r.has_value()) << r.error().message();
  EXPECT_EQ(walked(files), (std::vector<std::string>{dir.file("mid.qcow2") + " qcow2", dir.file("base.qcow2") + " raw"}));
  ASSERT_TRUE(open_chain(dir.file("top.qcow2")).has_value());

  // As if mid named top (tern-img rebase -b top.qcow2 mid.qcow2): a loop.
  files.clear();
  r = walk(dir.file("mid.qcow2"), files, "top.qcow2", "qcow2");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, Errc::BackingLoop) << r.error().message();
  EXPECT_EQ(walked(files), std::vector<std::string>{dir.file("top.qcow2") + " qcow2"}) << "the files above the loop";
  // As if it named nothing.
  files.clear();
  r = walk(dir.file("mid.qcow2"), files, "");
  EXPECT_TRUE(r.has_value() && files.empty());
}

TEST(BackingChain, TheWalkStopsWhereTheOpenIsRefused) {
  TempDir dir;
  SH_OK("qemu-img create -q -f qcow2 '" + dir.file("img0.qcow2") + "' 1M");
  for (int k = 1; k <= 17; ++k) {
    SH_OK("qemu-img create -q -f qcow2 -b img" + std::to_string(k - 1) + ".qcow2 -F qcow2 '" +
          dir.file("img" + std::to_string(k) + ".qcow2") + "'");
  }
  std::vector<BackingFile> files;
  auto r = walk(dir.file("img16.qcow2"), files);
  EXPECT_TRUE(r.has_value()) << r.error().message();
  EXPECT_EQ(files.size(), 16u);
  files.clear();
  r = walk(dir.file("img17.qcow2"), files);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, Errc::BackingChainTooDeep) << r.error().message();
  EXPECT_EQ(files.size(), 16u);

  // A FIFO, as backing file or on top, is refused without blocking.
  ASSERT_EQ(::mkfifo(dir.file("pipe").c_str(), 0600), 0);
  set_backing(dir.file("img0.qcow2"), "pipe", "raw");
  files.clear();
  r = walk(dir.file("img0.qcow2"), files);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, Errc::NotAFile) << r.error().message();
  r = walk(dir.file("pipe"), files);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, Errc::NotAFile) << r.error().message();
}

TEST(BackingChain, TernImgVerbsRefuseTheLoopWithoutCrashing) {
  TempDir dir;
  std::string a = dir.file("a.qcow2");
  SH_OK("qemu-img create -q -f qcow2 '" + a + "' 1M");
  set_backing(a, "a.qcow2", "qcow2");
  for (std::string verb : {"check '" + a + "'", "convert -O raw '" + a + "' '" + dir.file("out.raw") + "'",
                           "resize '" + a + "' 2M", "bench -c 1 '" + a + "'", "info '" + a + "'"}) {
    std::string out;
    int rc = sh("ulimit -n 20000 2>/dev/null; " + tern_img() + " " + verb, &out);
    if (verb.starts_with("info")) {
      EXPECT_EQ(rc, 0) << verb << "\n" << out;  // info reads the header only, as qemu-img does
      continue;
    }
    EXPECT_EQ(rc, 1) << verb << "\n" << out;  // an error, not a signal (sh() gives 128 + the signal then)
    EXPECT_NE(out.find("backing chain loops"), std::string::npos) << verb << "\n" << out;
  }
}

// tern-img has no sandbox (docs/SECURITY.md, "Sandbox"), so the open path's
// own rules are all that stands between an image and the host: a FIFO named
// as backing file is refused without blocking, and a relative name is found
// beside the image, never in the working directory.
TEST(BackingChain, TernImgObeysTheBackingRulesWithoutASandbox) {
  TempDir dir;
  std::string fifo = dir.file("pipe"), top = dir.file("top.qcow2");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  SH_OK("qemu-img create -q -f qcow2 '" + top + "' 1M");
  set_backing(top, "pipe", "raw");
  for (std::string verb : {"check '" + top + "'", "convert -O raw '" + top + "' '" + dir.file("out.raw") + "'"}) {
    std::string out;
    int rc = sh("timeout 20 " + tern_img() + " " + verb, &out);
    EXPECT_EQ(rc, 1) << verb << "\n" << out;  // refused, not hung (124) on the FIFO
    EXPECT_NE(out.find(fifo), std::string::npos) << verb << "\n" << out;
  }

  // top names "base.qcow2"; the working directory has another base.qcow2
  // full of 0x55, the image's directory the real one full of 0x17.
  std::string sub = dir.file("cwd");
  ASSERT_EQ(::mkdir(sub.c_str(), 0700), 0);
  SH_OK("qemu-img create -q -f qcow2 '" + dir.file("base.qcow2") + "' 1M");
  SH_OK("qemu-io -f qcow2 -c 'write -P 0x17 0 1M' '" + dir.file("base.qcow2") + "'");
  SH_OK("qemu-img create -q -f qcow2 '" + sub + "/base.qcow2' 1M");
  SH_OK("qemu-io -f qcow2 -c 'write -P 0x55 0 1M' '" + sub + "/base.qcow2'");
  set_backing(top, "base.qcow2", "qcow2");
  SH_OK("cd '" + sub + "' && " + tern_img() + " convert -O raw '" + top + "' '" + dir.file("out.raw") + "'");
  SH_OK("qemu-io -f raw -c 'read -P 0x17 0 1M' '" + dir.file("out.raw") + "'");
}

}  // namespace
}  // namespace tern::block::qcow2::test

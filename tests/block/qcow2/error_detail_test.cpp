// QCOW2 errors reach the device with the file and offset they concern, as
// raw's name their file (issue 12, item 7), and a failure to write the
// corrupt bit is reported, not discarded.
#include <gtest/gtest.h>

#include <fstream>

#include "block/qcow2/big_endian.h"
#include "block/qcow2/engine.h"
#include "block/qcow2/format.h"
#include "block/qcow2/host_file.h"
#include "tests/block/qcow2/qcow2_test_util.h"

namespace tern::block::qcow2::test {
namespace {

constexpr uint64_t kGuest = 3 * 65536;  // guest cluster 3

// An image whose L2 entry for guest cluster 3 is not cluster aligned.
void make_unaligned_entry(const std::string& img) {
  SH_OK("qemu-img create -q -f qcow2 -o cluster_size=65536 '" + img + "' 1M");
  SH_OK("qemu-io -f qcow2 -c 'write -P 1 " + std::to_string(kGuest) + " 64k' '" + img + "'");
  // qemu-img's layout: L2 table at 0x40000, the data cluster at 0x50000.
  std::fstream f(img, std::ios::in | std::ios::out | std::ios::binary);
  uint8_t b[8];
  store_be<uint64_t>(b, (0x50000 + 512) | kOflagCopied);
  f.seekp(0x40000 + 3 * 8);
  f.write(reinterpret_cast<const char*>(b), 8);
}

TEST(Qcow2Errors, RequestErrorsNameTheFileAndGuestOffset) {
  TempDir dir;
  std::string img = dir.file("u.qcow2");
  make_unaligned_entry(img);
  auto disk = open_image(img, true);
  ASSERT_NE(disk, nullptr);
  auto ctx = disk->make_io_context(2);
  ASSERT_TRUE(ctx.has_value());
  std::vector<uint8_t> buf(4096);
  auto r = pread_disk(**ctx, kGuest, buf);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, Errc::CorruptImage);
  const std::string text = r.error().message();
  EXPECT_NE(text.find(img), std::string::npos) << text;
  EXPECT_NE(text.find("guest offset " + std::to_string(kGuest)), std::string::npos) << text;
  EXPECT_NE(text.find(std::to_string(0x50000 + 512)), std::string::npos) << "the host offset: " << text;
}

// Header writes fail once armed (after the open has set the dirty bit).
class HeaderWritesFail final : public HostFile {
 public:
  HeaderWritesFail(std::unique_ptr<HostFile> inner, const bool& armed) : inner_(std::move(inner)), armed_(armed) {}
  Result<void> read_at(uint64_t o, std::span<uint8_t> b) override { return inner_->read_at(o, b); }
  Result<void> write_at(uint64_t o, std::span<const uint8_t> b) override {
    if (armed_ && o == 0) return fail(Errc::WriteFailed, ENOSPC);
    return inner_->write_at(o, b);
  }
  Result<void> sync() override { return inner_->sync(); }
  Result<uint64_t> size() override { return inner_->size(); }
  Result<void> truncate(uint64_t s) override { return inner_->truncate(s); }
  Result<void> preallocate(uint64_t o, uint64_t l) override { return inner_->preallocate(o, l); }
  int fd() const override { return -1; }

 private:
  std::unique_ptr<HostFile> inner_;
  const bool& armed_;
};

TEST(Qcow2Errors, FailureToWriteTheCorruptBitIsReported) {
  TempDir dir;
  std::string img = dir.file("c.qcow2");
  make_unaligned_entry(img);
  auto file = open_host_file(img, false);
  ASSERT_TRUE(file.has_value());
  bool armed = false;
  auto engine = Engine::open(std::make_unique<HeaderWritesFail>(std::move(*file), armed), img, EngineOptions{});
  ASSERT_TRUE(engine.has_value()) << engine.error().message();
  armed = true;
  std::vector<uint8_t> buf(4096);
  iovec v{buf.data(), buf.size()};
  auto r = (*engine)->read(kGuest, std::span<const iovec>(&v, 1), nullptr);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, Errc::CorruptImage);
  EXPECT_NE(r.error().message().find("corrupt bit could not be set"), std::string::npos) << r.error().message();
  EXPECT_EQ(r.error().sys_errno, ENOSPC) << r.error().message();
}

}  // namespace
}  // namespace tern::block::qcow2::test

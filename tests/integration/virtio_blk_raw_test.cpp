// The test guest under build/tern on raw images, sync and native AIO, O_DIRECT on and off (see virtio_blk_guest.h).
#include "tests/integration/virtio_blk_guest.h"

namespace tern::it {
namespace {

TEST_F(VirtioBlkGuest, RawSyncOneQueue) {
  std::string img = raw_image();
  boot("raw aio=sync 1 queue", "path=" + img + ",image_type=raw,aio=sync,serial=" + kSerial,
       std::string("prepared expect_queues=1 serial=") + kSerial);
  expect_guest_writes(read_file(img), false);
}

TEST_F(VirtioBlkGuest, RawSyncTwoQueues) {
  std::string img = raw_image();
  boot("raw aio=sync 2 queues",
       "path=" + img + ",image_type=raw,aio=sync,num_queues=2,serial=" + kSerial,
       std::string("prepared expect_queues=2 serial=") + kSerial);
  expect_guest_writes(read_file(img), true);
}

TEST_F(VirtioBlkGuest, RawAsyncOneQueue) {
  std::string img = raw_image();
  boot("raw_async direct=off 1 queue", "path=" + img + ",image_type=raw,aio=native,serial=" + kSerial,
       std::string("prepared expect_queues=1 serial=") + kSerial);
  expect_guest_writes(read_file(img), false);
}

TEST_F(VirtioBlkGuest, RawAsyncTwoQueues) {
  std::string img = raw_image();
  boot("raw_async direct=off 2 queues",
       "path=" + img + ",image_type=raw,aio=native,num_queues=2,serial=" + kSerial,
       std::string("prepared expect_queues=2 serial=") + kSerial);
  expect_guest_writes(read_file(img), true);
}

TEST_F(VirtioBlkGuest, RawAsyncDirectTwoQueues) {
  std::string img = raw_image();
  boot("raw_async direct=on 2 queues",
       "path=" + img + ",image_type=raw,aio=native,direct=on,num_queues=2,serial=" + kSerial,
       std::string("prepared expect_queues=2 serial=") + kSerial);
  expect_guest_writes(read_file(img), true);
}

TEST_F(VirtioBlkGuest, RawAsyncDirectOneQueue) {
  std::string img = raw_image();
  boot("raw_async direct=on 1 queue",
       "path=" + img + ",image_type=raw,aio=native,direct=on,serial=" + kSerial,
       std::string("prepared expect_queues=1 serial=") + kSerial);
  expect_guest_writes(read_file(img), false);
}

TEST_F(VirtioBlkGuest, ReadOnlyRaw) {
  std::string img = raw_image();
  std::string out = boot("raw read-only", "path=" + img + ",readonly=on,serial=" + kSerial,
                         std::string("prepared expect_ro serial=") + kSerial);
  EXPECT_NE(out.find("write refused with IOERR on read-only disk"), std::string::npos);
  EXPECT_EQ(read_file(img), pattern_image());  // untouched
}

TEST_F(VirtioBlkGuest, HostileChainsOnRaw) {
  std::string img = raw_image();
  std::string out = boot("raw hostile", "path=" + img + ",aio=native,serial=" + kSerial,
                         std::string("prepared hostile reqs=16 serial=") + kSerial);
  for (const char* kind : {"buffer outside RAM", "descriptor loop", "bad indirect length",
                           "nested indirect", "avail idx jump", "oversized indirect chain"}) {
    EXPECT_NE(out.find(std::string(kind) + " -> NEEDS_RESET"), std::string::npos) << kind;
  }
}

}  // namespace
}  // namespace tern::it

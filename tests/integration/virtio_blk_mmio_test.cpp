// The test guest under build/tern over virtio-mmio (label kvm): every
// request type, 2 queues, read-only, the hostile chains, and a VM with one
// PCI and one MMIO disk that the guest drives one after the other (see
// virtio_blk_guest.h). The resize interrupt over MMIO is in
// api_resize_test.cpp.
#include "tests/integration/virtio_blk_guest.h"

namespace tern::it {
namespace {

TEST_F(VirtioBlkGuest, MmioTwoQueues) {
  std::string img = raw_image();
  std::string out = boot("mmio raw 2 queues", "path=" + img + ",aio=native,num_queues=2,transport=mmio,serial=" + kSerial,
                         std::string("transport=mmio prepared expect_queues=2 serial=") + kSerial);
  EXPECT_NE(out.find("virtio-blk found by probing the virtio-mmio window"), std::string::npos) << out;
  EXPECT_NE(out.find("queue 1 completion raises the device's interrupt line"), std::string::npos) << out;
  expect_guest_writes(read_file(img), true);
}

TEST_F(VirtioBlkGuest, MmioReadOnlyAndHostileChains) {
  std::string img = raw_image();
  std::string out = boot("mmio raw read-only hostile",
                         "path=" + img + ",readonly=on,transport=mmio,serial=" + kSerial,
                         std::string("transport=mmio prepared expect_ro hostile reqs=16 serial=") + kSerial);
  EXPECT_NE(out.find("write refused with IOERR on read-only disk"), std::string::npos);
  for (const char* kind : {"buffer outside RAM", "descriptor loop", "bad indirect length", "nested indirect",
                           "avail idx jump", "oversized indirect chain", "indirect table longer than the queue"}) {
    EXPECT_NE(out.find(std::string(kind) + " -> NEEDS_RESET"), std::string::npos) << kind;
  }
  EXPECT_EQ(read_file(img), pattern_image());  // untouched
}

TEST_F(VirtioBlkGuest, OnePciAndOneMmioDisk) {
  std::string pci = raw_image(), mmio = dir_ + "/mmio.raw";
  write_file(mmio, pattern_image());
  std::string out = boot("pci + mmio", "path=" + pci + ",id=p,serial=" + std::string(kSerial) + " --disk path=" +
                                           mmio + ",id=m,transport=mmio,num_queues=2,serial=" + kSerial,
                         std::string("transport=both prepared serial=") + kSerial);
  EXPECT_NE(out.find("virtio-blk found by PCI enumeration"), std::string::npos) << out;
  EXPECT_NE(out.find("virtio-blk found by probing the virtio-mmio window"), std::string::npos) << out;
  expect_guest_writes(read_file(pci), false);
  expect_guest_writes(read_file(mmio), true);
}

}  // namespace
}  // namespace tern::it

// libFuzzer target for the guest-facing virtio-blk request path: the input
// is a hostile driver's rings and chains (tests/fuzz/virtio_blk_fuzz_body.h).
#include "tests/fuzz/virtio_blk_fuzz_body.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > (64 << 10)) return 0;
  tern::devices::fuzz::exercise(data, size);
  return 0;
}

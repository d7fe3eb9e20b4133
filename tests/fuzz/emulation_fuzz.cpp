// libFuzzer target for the emulation fallback: random instruction bytes over
// random vCPU state and fake guest page tables (tests/fuzz/emulation_fuzz_body.h).
#include "tests/fuzz/emulation_fuzz_body.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > (192 << 10)) return 0;
  tern::vmm::fuzz::exercise(data, size);
  return 0;
}

// libFuzzer target: the input is an image file. Opens it with the QCOW2
// engine (read-only, then writable), reads from it, writes to it, checks
// it. Any crash, hang, sanitizer report or huge allocation is a finding;
// errors are the expected answer to hostile images.
#include "tests/fuzz/qcow2_fuzz_body.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > (4 << 20)) return 0;
  tern::block::qcow2::fuzz::exercise(data, size, false);
  tern::block::qcow2::fuzz::exercise(data, size, true);
  return 0;
}

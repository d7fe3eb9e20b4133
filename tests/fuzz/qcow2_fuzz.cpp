// libFuzzer target: the input is an image file (or, for the backing-chain
// pass, up to three images separated by "TERNBACK"). Opens it with the
// QCOW2 engine (read-only, then writable), reads from it, writes to it,
// checks it; then the same with the dirty bit set (the refcount rebuild at
// open) and as the top of a backing chain. Any crash, hang, sanitizer
// report or huge allocation is a finding; errors are the expected answer to
// hostile images.
#include "tests/fuzz/qcow2_fuzz_body.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > (4 << 20)) return 0;
  tern::block::qcow2::fuzz::exercise(data, size, false);
  tern::block::qcow2::fuzz::exercise(data, size, true);
  tern::block::qcow2::fuzz::exercise_dirty(data, size);
  tern::block::qcow2::fuzz::exercise_backing(data, size);
  return 0;
}

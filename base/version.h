// The program version printed by --version (tern, tern-img, tern-remote):
// the CMake project version and, when built from a git checkout, its
// `git describe`, e.g. "0.1.0 (git 6dcf77e-dirty)". The definition is
// generated at build time (cmake/version.cmake) into one source file, so a
// new commit recompiles that file and relinks, nothing else.
#pragma once

namespace tern {

const char* version_text();

}  // namespace tern

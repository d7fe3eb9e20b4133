// Errors of the x86-64 boot code: one value per reason a kernel or boot
// set-up is refused. Text only at the edge (message()).
#pragma once

#include <expected>
#include <string>

namespace tern::arch::x86_64 {

enum class Errc {
  UnknownKernelFormat,  // neither a bzImage nor an ELF64
  BadBzImage,           // setup header missing or inconsistent (detail says what)
  UnsupportedProtocol,  // boot protocol older than 2.12, or not 64-bit capable
  BadElf,               // ELF header or program headers malformed
  DoesNotFit,           // kernel, initramfs or command line outside RAM or their limit
  TooManyE820Entries,
};

struct Error {
  Errc code;
  std::string detail;
  std::string message() const;
};

template <class T>
using Result = std::expected<T, Error>;

inline std::unexpected<Error> fail(Errc code, std::string detail) {
  return std::unexpected(Error{code, std::move(detail)});
}

}  // namespace tern::arch::x86_64

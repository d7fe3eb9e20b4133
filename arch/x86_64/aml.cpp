#include "arch/x86_64/aml.h"

#include <cstdlib>

namespace tern::arch::x86_64::aml {
namespace {

constexpr uint8_t kZeroOp = 0x00, kOneOp = 0x01, kNameOp = 0x08, kBytePrefix = 0x0a,
                  kWordPrefix = 0x0b, kDWordPrefix = 0x0c, kStringPrefix = 0x0d,
                  kQWordPrefix = 0x0e, kScopeOp = 0x10, kBufferOp = 0x11, kPackageOp = 0x12,
                  kExtOpPrefix = 0x5b, kDeviceOp = 0x82, kMethodOp = 0x14, kNotifyOp = 0x86, kRootChar = 0x5c,
                  kDualNamePrefix = 0x2e, kMultiNamePrefix = 0x2f;

void append(Bytes& out, const Bytes& more) {
  // push_back rather than insert(): g++ 12 reports a false -Warray-bounds
  // on vector range inserts into one-element vectors.
  out.reserve(out.size() + more.size());
  for (uint8_t b : more) out.push_back(b);
}

void put_le(Bytes& out, uint64_t value, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<uint8_t>(value >> (8 * i)));
}

// PkgLength (20.2.4): the length counts itself. One byte holds up to 63;
// otherwise bits 7:6 of the lead byte give the number of following bytes,
// its low nibble the lowest 4 bits, and the following bytes the rest.
Bytes pkg_length(size_t content) {
  Bytes out;
  if (content + 1 < 64) {
    out.push_back(static_cast<uint8_t>(content + 1));
    return out;
  }
  for (int extra = 1; extra <= 3; ++extra) {
    size_t total = content + 1 + extra;
    if (total < (size_t{1} << (4 + 8 * extra))) {
      out.push_back(static_cast<uint8_t>((extra << 6) | (total & 0xf)));
      for (int i = 0; i < extra; ++i) out.push_back(static_cast<uint8_t>(total >> (4 + 8 * i)));
      return out;
    }
  }
  std::abort();  // 256 MiB of AML: an internal invariant broken
}

Bytes with_pkg_length(std::initializer_list<uint8_t> opcode, const Bytes& content) {
  Bytes out(opcode);
  append(out, pkg_length(content.size()));
  append(out, content);
  return out;
}

}  // namespace

Bytes join(const std::vector<Bytes>& parts) {
  Bytes out;
  for (const Bytes& p : parts) append(out, p);
  return out;
}

Bytes name_string(std::string_view path) {
  Bytes out;
  if (!path.empty() && path.front() == '\\') {
    out.push_back(kRootChar);
    path.remove_prefix(1);
  }
  std::vector<std::string_view> segments;
  while (!path.empty()) {
    size_t dot = path.find('.');
    segments.push_back(path.substr(0, dot));
    if (dot == std::string_view::npos) break;
    path.remove_prefix(dot + 1);
  }
  if (segments.size() == 2) out.push_back(kDualNamePrefix);
  if (segments.size() > 2) {
    out.push_back(kMultiNamePrefix);
    out.push_back(static_cast<uint8_t>(segments.size()));
  }
  for (std::string_view seg : segments) {
    if (seg.empty() || seg.size() > 4) std::abort();  // names are compile-time constants here
    for (size_t i = 0; i < 4; ++i) out.push_back(i < seg.size() ? static_cast<uint8_t>(seg[i]) : '_');
  }
  if (segments.empty()) out.push_back(0x00);  // NullName
  return out;
}

Bytes integer(uint64_t value) {
  Bytes out;
  if (value == 0) return {kZeroOp};
  if (value == 1) return {kOneOp};
  if (value <= 0xff) {
    out.push_back(kBytePrefix);
    put_le(out, value, 1);
  } else if (value <= 0xffff) {
    out.push_back(kWordPrefix);
    put_le(out, value, 2);
  } else if (value <= 0xffff'ffff) {
    out.push_back(kDWordPrefix);
    put_le(out, value, 4);
  } else {
    out.push_back(kQWordPrefix);
    put_le(out, value, 8);
  }
  return out;
}

Bytes string(std::string_view text) {
  Bytes out;
  out.reserve(text.size() + 2);
  out.push_back(kStringPrefix);
  for (char c : text) out.push_back(static_cast<uint8_t>(c));
  out.push_back(0);
  return out;
}

// EISA id (ACPI 6.5, 6.1.5): three letters of 5 bits each and four hex
// digits, stored big-endian in a DWord.
Bytes eisa_id(std::string_view id) {
  if (id.size() != 7) std::abort();
  auto hex = [](char c) -> uint32_t {
    return static_cast<uint32_t>(c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10);
  };
  uint32_t v = ((uint32_t(id[0]) & 0x1f) << 26) | ((uint32_t(id[1]) & 0x1f) << 21) |
               ((uint32_t(id[2]) & 0x1f) << 16) | (hex(id[3]) << 12) | (hex(id[4]) << 8) |
               (hex(id[5]) << 4) | hex(id[6]);
  Bytes out{kDWordPrefix};
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<uint8_t>(v >> shift));
  return out;
}

Bytes package(const std::vector<Bytes>& elements) {
  Bytes content{static_cast<uint8_t>(elements.size())};
  append(content, join(elements));
  return with_pkg_length({kPackageOp}, content);
}

Bytes name(std::string_view n, const Bytes& value) {
  Bytes out{kNameOp};
  append(out, name_string(n));
  append(out, value);
  return out;
}

Bytes scope(std::string_view n, const std::vector<Bytes>& terms) {
  Bytes content = name_string(n);
  append(content, join(terms));
  return with_pkg_length({kScopeOp}, content);
}

Bytes device(std::string_view n, const std::vector<Bytes>& terms) {
  Bytes content = name_string(n);
  append(content, join(terms));
  return with_pkg_length({kExtOpPrefix, kDeviceOp}, content);
}

Bytes method(std::string_view n, uint8_t args, const std::vector<Bytes>& terms) {
  if (args > 7) std::abort();  // MethodFlags bits 0-2; names are compile-time constants here
  Bytes content = name_string(n);
  content.push_back(args);  // bit 3 clear: NotSerialized, SyncLevel 0
  append(content, join(terms));
  return with_pkg_length({kMethodOp}, content);
}

Bytes notify(std::string_view target, uint64_t value) {
  Bytes out{kNotifyOp};
  append(out, name_string(target));
  append(out, integer(value));
  return out;
}

Bytes resource_template(const std::vector<Bytes>& descriptors) {
  Bytes body = join(descriptors);
  body.push_back(0x79);  // End Tag; a zero checksum means "treat as valid"
  body.push_back(0x00);
  Bytes content = integer(body.size());
  append(content, body);
  return with_pkg_length({kBufferOp}, content);
}

Bytes io_port(uint16_t base, uint8_t length) {
  Bytes out{0x47, 0x01};  // I/O port descriptor, 16-bit decode
  put_le(out, base, 2);
  put_le(out, base, 2);
  out.push_back(1);  // alignment
  out.push_back(length);
  return out;
}

Bytes irq(uint8_t line) {
  Bytes out{0x22};  // IRQ descriptor without flags: edge, active high
  put_le(out, uint64_t{1} << line, 2);
  return out;
}

Bytes interrupt(uint32_t gsi) {
  // Extended Interrupt Descriptor (6.4.3.6): length 6, flags consumer |
  // edge (active high, exclusive), one interrupt number.
  Bytes out{0x89, 0x06, 0x00, 0x03, 0x01};
  put_le(out, gsi, 4);
  return out;
}

Bytes memory32_fixed(uint32_t base, uint32_t length) {
  Bytes out{0x86, 0x09, 0x00, 0x01};  // read-write
  put_le(out, base, 4);
  put_le(out, length, 4);
  return out;
}

namespace {
// Word/DWord address space descriptors (6.4.3.5.2/6.4.3.5.3). General flags
// 0x0c: minimum and maximum fixed, positive decode, producer.
Bytes address_space(uint8_t tag, uint8_t resource_type, uint8_t type_flags, int width,
                    uint64_t min, uint64_t max) {
  Bytes out{tag};
  put_le(out, 3 + 5 * width, 2);
  out.push_back(resource_type);
  out.push_back(0x0c);
  out.push_back(type_flags);
  put_le(out, 0, width);  // granularity
  put_le(out, min, width);
  put_le(out, max, width);
  put_le(out, 0, width);  // translation
  put_le(out, max - min + 1, width);
  return out;
}
}  // namespace

Bytes word_bus_number(uint16_t min, uint16_t max) { return address_space(0x88, 2, 0, 2, min, max); }
Bytes word_io(uint16_t min, uint16_t max) { return address_space(0x88, 1, 0x03, 2, min, max); }
Bytes dword_memory(uint32_t min, uint32_t max) { return address_space(0x87, 0, 0x01, 4, min, max); }

}  // namespace tern::arch::x86_64::aml

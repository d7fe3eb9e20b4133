#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdio>

#include "tools/sizes.h"

namespace tern::tools {

std::optional<uint64_t> parse_size(const std::string& text) {
  if (text.empty() || !std::isdigit(static_cast<unsigned char>(text[0]))) return std::nullopt;
  double value = 0;
  auto [rest, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc()) return std::nullopt;
  std::string suffix(rest, text.data() + text.size());
  if (suffix.size() > 1 && (suffix.back() == 'B' || suffix.back() == 'b')) suffix.pop_back();
  if (suffix.size() > 1 && suffix.back() == 'i') suffix.pop_back();
  int shift = 0;
  if (suffix.size() > 1) return std::nullopt;
  if (!suffix.empty()) {
    switch (std::tolower(static_cast<unsigned char>(suffix[0]))) {
      case 'b': shift = 0; break;
      case 'k': shift = 10; break;
      case 'm': shift = 20; break;
      case 'g': shift = 30; break;
      case 't': shift = 40; break;
      case 'p': shift = 50; break;
      case 'e': shift = 60; break;
      default: return std::nullopt;
    }
  }
  double bytes = std::ldexp(value, shift);
  if (bytes < 0 || bytes >= 18446744073709551615.0) return std::nullopt;
  return static_cast<uint64_t>(bytes);
}

std::string human_size(uint64_t bytes) {
  static const char* const suffixes[] = {"", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"};
  int exponent = 0;
  std::frexp(static_cast<double>(bytes) / (1000.0 / 1024.0), &exponent);
  int i = (exponent - 1) / 10;
  if (i < 0) i = 0;
  double scaled = static_cast<double>(bytes) / static_cast<double>(uint64_t{1} << (i * 10));
  char buf[64];
  std::snprintf(buf, sizeof buf, "%0.3g %sB", scaled, suffixes[i]);
  return buf;
}

}  // namespace tern::tools

// Sizes as qemu-img writes and reads them, shared by tern-img and
// tern-remote.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace tern::tools {

// "10G", "512k", "1048576": qemu-img's size syntax (binary suffixes, bytes
// without one). nullopt when malformed.
std::optional<uint64_t> parse_size(const std::string& text);
// qemu's size_to_str: three significant digits and a binary unit ("196 KiB").
std::string human_size(uint64_t bytes);

}  // namespace tern::tools

// tern-img verbs, one file each. Every add_* registers its subcommand on the
// app; its callback stores the process exit status in `status`.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <optional>
#include <string>

namespace tern::img {

void add_create(CLI::App& app, int& status);
void add_info(CLI::App& app, int& status);
void add_convert(CLI::App& app, int& status);
void add_resize(CLI::App& app, int& status);
void add_bench(CLI::App& app, int& status);
void add_io(CLI::App& app, int& status);
void add_check(CLI::App& app, int& status);

// "10G", "512k", "1048576": qemu-img's size syntax (binary suffixes, bytes
// without one). nullopt when malformed.
std::optional<uint64_t> parse_size(const std::string& text);
// qemu's size_to_str: three significant digits and a binary unit ("196 KiB").
std::string human_size(uint64_t bytes);

}  // namespace tern::img

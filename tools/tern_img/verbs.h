// tern-img verbs, one file each. Every add_* registers its subcommand on the
// app; its callback stores the process exit status in `status`.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <optional>
#include <string>

#include "tools/sizes.h"

namespace tern::img {

void add_create(CLI::App& app, int& status);
void add_info(CLI::App& app, int& status);
void add_convert(CLI::App& app, int& status);
void add_resize(CLI::App& app, int& status);
void add_bench(CLI::App& app, int& status);
void add_io(CLI::App& app, int& status);
void add_check(CLI::App& app, int& status);
void add_map(CLI::App& app, int& status);
void add_compare(CLI::App& app, int& status);

using tools::human_size;
using tools::parse_size;

}  // namespace tern::img

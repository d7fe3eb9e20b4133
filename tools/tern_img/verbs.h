// tern-img verbs, one file each. Every add_* registers its subcommand on the
// app; its callback stores the process exit status in `status`.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <optional>
#include <string>

#include "block/image.h"
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
void add_commit(CLI::App& app, int& status);
void add_rebase(CLI::App& app, int& status);
void add_measure(CLI::App& app, int& status);

// qemu-img's -o list for qcow2 (cluster_size=, refcount_bits=, compat=,
// compression_type=, backing_file=, backing_fmt=) into `c`; false, with a
// message on stderr, when an item is unknown or malformed.
bool parse_qcow2_options(const std::string& options, block::CreateOptions& c);

// Says "tern-img: MESSAGE" on stderr; returns 1, a failed verb's status.
int report_error(const std::string& message);

using tools::human_size;
using tools::parse_size;

}  // namespace tern::img

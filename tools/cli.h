// Command-line parsing shared by tern-img and tern-remote: qemu-img's exit
// statuses (a usage error is status 1, not CLI11's own 105..115 codes) and
// --version with the project's version text.
#pragma once

#include <CLI/CLI.hpp>
#include <optional>

namespace tern::tools {

// Adds --version, printing "<program> version <version_text()>".
void add_version_flag(CLI::App& app);

// Parses; nullopt when the program should go on, otherwise the status to
// exit with: 0 after --help or --version, 1 after a usage error (message
// and a hint at --help on stderr).
[[nodiscard]] std::optional<int> parse_command_line(CLI::App& app, int argc, char** argv);

}  // namespace tern::tools

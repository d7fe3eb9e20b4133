#include "tools/cli.h"

#include <iostream>
#include <string>

#include "base/version.h"

namespace tern::tools {

void add_version_flag(CLI::App& app) {
  std::string program = app.get_name();
  app.set_version_flag("--version", [program] {
    return program + " version " + version_text();
  });
}

std::optional<int> parse_command_line(CLI::App& app, int argc, char** argv) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // Help and version are "errors" with status 0; everything else is a
    // usage error, status 1 as in qemu-img.
    int code = app.exit(e, std::cout, std::cerr);
    return code == 0 ? 0 : 1;
  }
  return std::nullopt;
}

}  // namespace tern::tools

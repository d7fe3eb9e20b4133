// tern-img: image tool following qemu-img's verbs and output.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <string>

#include "tools/cli.h"
#include "tools/tern_img/verbs.h"

namespace tern::img {

int report_error(const std::string& message) {
  std::fprintf(stderr, "tern-img: %s\n", message.c_str());
  return 1;
}

}  // namespace tern::img

int main(int argc, char** argv) {
  CLI::App app{"tern-img: create, inspect, compare, convert, check and benchmark disk images (qemu-img verbs; VERB --help for each)", "tern-img"};
  tern::tools::add_version_flag(app);
  app.require_subcommand(1);
  int status = 0;
  tern::img::add_create(app, status);
  tern::img::add_info(app, status);
  tern::img::add_convert(app, status);
  tern::img::add_resize(app, status);
  tern::img::add_bench(app, status);
  tern::img::add_io(app, status);
  tern::img::add_check(app, status);
  tern::img::add_map(app, status);
  tern::img::add_compare(app, status);
  tern::img::add_commit(app, status);
  tern::img::add_rebase(app, status);
  tern::img::add_measure(app, status);
  if (auto exit_status = tern::tools::parse_command_line(app, argc, argv)) return *exit_status;
  return status;
}

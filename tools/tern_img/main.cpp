// tern-img: image tool following qemu-img's verbs and output.
#include <CLI/CLI.hpp>

int main(int argc, char** argv) {
  CLI::App app{"tern-img: create, inspect, check and benchmark disk images"};
  app.require_subcommand(1);
  CLI11_PARSE(app, argc, argv);
  return 0;
}

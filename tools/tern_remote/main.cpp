// tern-remote: command-line client of tern's HTTP API.
#include <CLI/CLI.hpp>

int main(int argc, char** argv) {
  CLI::App app{"tern-remote: control a running tern over its API socket"};
  app.require_subcommand(1);
  CLI11_PARSE(app, argc, argv);
  return 0;
}

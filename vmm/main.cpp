// tern: boots one guest, serves the API, exits when the guest powers off.
#include <CLI/CLI.hpp>

int main(int argc, char** argv) {
  CLI::App app{"tern: a minimal KVM virtual machine monitor"};
  CLI11_PARSE(app, argc, argv);
  return 0;
}

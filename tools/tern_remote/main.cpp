// tern-remote: command-line client of tern's HTTP API on its Unix socket.
//   tern-remote --api-socket PATH [--output human|json]
//               ping | info | counters | resize-disk --disk ID --size SIZE | power-button | shutdown
#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>

#include "api/client.h"
#include "tools/cli.h"
#include "tools/sizes.h"

namespace {

using json = nlohmann::json;

struct Call {
  std::string method;
  std::string target;
  std::string body;
};

void print_human(const std::string& verb, const json& doc, const std::string& disk, uint64_t size) {
  if (verb == "ping") {
    std::cout << "tern " << doc.value("version", "?") << " is running\n";
  } else if (verb == "info") {
    const json& cfg = doc.value("config", json::object());
    std::cout << "state: " << doc.value("state", "?") << "\n";
    if (cfg.contains("cpus")) std::cout << "cpus: " << cfg["cpus"].value("boot_vcpus", 0) << "\n";
    if (cfg.contains("memory")) std::cout << "memory: " << cfg["memory"].value("size", uint64_t{0}) << " bytes\n";
    for (const json& d : cfg.value("disks", json::array())) {
      std::cout << "disk " << d.value("id", "?") << ": " << d.value("path", "?") << " ("
                << d.value("format", "?") << ", " << d.value("size", uint64_t{0}) << " bytes"
                << (d.value("readonly", false) ? ", read-only" : "") << ", "
                << d.value("num_queues", 1) << " queue(s))\n";
    }
  } else if (verb == "counters") {
    for (const auto& [id, c] : doc.items()) {
      std::cout << id << ": reads " << c.value("read_ops", 0ull) << " (" << c.value("read_bytes", 0ull)
                << " bytes), writes " << c.value("write_ops", 0ull) << " (" << c.value("write_bytes", 0ull)
                << " bytes), flushes " << c.value("flush_ops", 0ull) << ", discards "
                << c.value("discard_ops", 0ull) << ", write-zeroes " << c.value("write_zeroes_ops", 0ull)
                << ", errors " << c.value("errors", 0ull) << "\n";
    }
  } else if (verb == "resize-disk") {
    std::cout << "disk " << disk << " resized to " << size << " bytes\n";
  } else if (verb == "power-button") {
    std::cout << "power button pressed\n";
  } else if (verb == "shutdown") {
    std::cout << "tern is shutting down\n";
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"tern-remote: control a running tern over its API socket", "tern-remote"};
  tern::tools::add_version_flag(app);
  std::string socket_path;
  std::string output = "human";
  app.add_option("--api-socket", socket_path, "tern's API socket")->required();
  app.add_option("--output", output, "human or json")->check(CLI::IsMember({"human", "json"}));
  app.require_subcommand(1);
  app.add_subcommand("ping", "check that tern answers and print its version");
  app.add_subcommand("info", "show the VM's configuration, state and disks");
  app.add_subcommand("counters", "show per-disk I/O counters");
  auto* resize = app.add_subcommand("resize-disk", "grow a disk of the running VM");
  std::string disk, size_text;
  resize->add_option("--disk", disk, "disk id")->required();
  resize->add_option("--size", size_text, "new size (bytes, or with K/M/G/T suffix)")->required();
  app.add_subcommand("power-button", "press the guest's ACPI power button (the guest shuts itself down)");
  app.add_subcommand("shutdown", "shut the VM and tern down");
  if (auto exit_status = tern::tools::parse_command_line(app, argc, argv)) return *exit_status;

  std::string verb = app.get_subcommands().front()->get_name();
  Call call;
  uint64_t size = 0;
  if (verb == "ping") call = {"GET", "/api/v1/vmm.ping", {}};
  if (verb == "info") call = {"GET", "/api/v1/vm.info", {}};
  if (verb == "counters") call = {"GET", "/api/v1/vm.counters", {}};
  if (verb == "power-button") call = {"PUT", "/api/v1/vm.power-button", {}};
  if (verb == "shutdown") call = {"PUT", "/api/v1/vmm.shutdown", {}};
  if (verb == "resize-disk") {
    auto parsed = tern::tools::parse_size(size_text);
    if (!parsed) {
      std::fprintf(stderr, "tern-remote: invalid size '%s'\n", size_text.c_str());
      return 1;
    }
    size = *parsed;
    call = {"PUT", "/api/v1/vm.resize-disk", json{{"id", disk}, {"desired_size", size}}.dump()};
  }

  auto reply = tern::api::http_request(socket_path, call.method, call.target, call.body);
  if (!reply) {
    std::fprintf(stderr, "tern-remote: %s\n", reply.error().c_str());
    return 1;
  }
  json doc = reply->body.empty() ? json::object() : json::parse(reply->body, nullptr, false);
  if (reply->status >= 400) {
    std::string message = doc.is_object() ? doc.value("error", reply->body) : reply->body;
    std::fprintf(stderr, "tern-remote: %s failed (HTTP %d): %s\n", verb.c_str(), reply->status,
                 message.c_str());
    return 1;
  }
  if (output == "json") {
    std::cout << (doc.is_discarded() ? json(reply->body) : doc).dump(2) << "\n";
  } else {
    print_human(verb, doc.is_discarded() ? json::object() : doc, disk, size);
  }
  return 0;
}

// tern: boots one guest, serves the API, exits when the guest powers off.
// Exit status (docs/vmm.md): 0 guest power-off, 1 VMM failure (bad
// options, host or KVM errors), 2 guest reset, 3 guest crash seen by KVM.
#include <csignal>
#include <cstdio>

#include "api/http_server.h"
#include "base/thread_sandbox.h"
#include "vmm/api_control.h"
#include "vmm/config.h"
#include "vmm/machine.h"
#include "vmm/sandbox.h"
#include "vmm/signal_watcher.h"

int main(int argc, char** argv) {
  auto config = tern::vmm::parse_command_line(argc, argv);
  if (!config) {
    std::fputs(config.error().message.c_str(), config.error().exit_code == 0 ? stdout : stderr);
    return config.error().exit_code;
  }
  // Before any thread exists, so that every thread inherits the mask.
  if (auto r = tern::vmm::ignore_broken_pipes(); !r) {
    std::fprintf(stderr, "tern: %s\n", r.error().message().c_str());
    return tern::vmm::kExitVmmFailure;
  }
  if (auto r = tern::vmm::block_termination_signals(); !r) {
    std::fprintf(stderr, "tern: %s\n", r.error().message().c_str());
    return tern::vmm::kExitVmmFailure;
  }
  // The sandbox (vmm/sandbox.h): prepared before the first thread, armed
  // once the set-up has opened every file. Declared first, it outlives
  // every thread; the launcher creates the threads that confined threads
  // ask for (a vCPU activating a virtio queue).
  auto sandbox = tern::vmm::Sandbox::prepare(*config);
  if (!sandbox) {
    std::fprintf(stderr, "tern: %s\n", sandbox.error().c_str());
    return tern::vmm::kExitVmmFailure;
  }
  std::unique_ptr<tern::ThreadLauncher> launcher;
  if (*sandbox) {
    launcher = tern::ThreadLauncher::start();
    launcher->install();
  }
  auto machine = tern::vmm::Machine::create(*config);
  if (!machine) {
    std::fprintf(stderr, "tern: %s\n", machine.error().c_str());
    return tern::vmm::kExitVmmFailure;
  }
  tern::vmm::Machine& m = **machine;
  // SIGINT/SIGTERM: an orderly shutdown (disks closed), exit status 0.
  // SIGUSR1: every vCPU prints its registers and the guest goes on.
  auto watcher = tern::vmm::SignalWatcher::start([&m](int signo) {
    if (signo == SIGUSR1) m.dump_vcpus();
    else m.shutdown();
  });
  if (!watcher) {
    std::fprintf(stderr, "tern: %s\n", watcher.error().message().c_str());
    return tern::vmm::kExitVmmFailure;
  }
  // The API: its HTTP thread and the control thread that runs its commands.
  std::unique_ptr<tern::vmm::ApiControl> control;
  std::unique_ptr<tern::api::HttpServer> server;
  if (config->api_socket) {
    auto started = tern::vmm::ApiControl::start(m);
    if (!started) {
      std::fprintf(stderr, "tern: API control thread: %s\n", started.error().message().c_str());
      return tern::vmm::kExitVmmFailure;
    }
    control = std::move(*started);
    auto listening = tern::api::HttpServer::start(*config->api_socket, *control);
    if (!listening) {
      std::fprintf(stderr, "tern: %s\n", listening.error().message().c_str());
      return tern::vmm::kExitVmmFailure;
    }
    server = std::move(*listening);
  }
  if (*sandbox) {
    if (auto armed = (*sandbox)->arm(m.image_fds()); !armed) {
      std::fprintf(stderr, "tern: %s\n", armed.error().c_str());
      return tern::vmm::kExitVmmFailure;
    }
  }
  int status = m.run();
  server.reset();  // no new commands, socket removed
  control.reset();
  watcher->reset();
  return status;
}

// Thread kinds and the one call every Tern thread makes first.
//
// A VMM's threads do different jobs with different system calls, so each
// kind gets its own seccomp filter (docs/SECURITY.md, "Sandbox"). The
// policy lives in vmm/sandbox.h, a layer that devices/, block/ and api/
// may not include; they reach it through this header: every thread starts
// with start_thread(kind, body), which names the thread ("tern-<kind>",
// visible in /proc/<pid>/task/*/comm) and calls the hook the program
// installed (nothing in unit tests and tools, which install none) before
// body touches guest or client input.
//
// seccomp filters and Landlock domains are inherited by the threads a
// thread creates, and stack: a thread made by a vCPU thread could never
// do more than the vCPU filter allows. So a thread that has entered its
// sandbox does not create threads itself: start_thread hands the creation
// to the ThreadLauncher (a thread started before any sandbox, whose filter
// is its own list plus those of the kinds it launches).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <stop_token>
#include <thread>

namespace tern {

enum class ThreadKind : uint8_t {
  Main,          // builds the VM, waits for its end, closes the disks
  Vcpu,          // KVM_RUN and the I/O exits
  VirtioQueue,   // one virtqueue's event loop and its backend requests
  IoWorker,      // block/raw worker pool: synchronous I/O for a queue
  Control,       // runs the API's commands against the machine
  Api,           // the HTTP server on the API socket
  Signal,        // SIGINT/SIGTERM/SIGUSR1 through a signalfd
  ConsoleInput,  // stdin to the UART
  ConsoleOutput, // the UART's output to stdout or a file
  Launcher,      // creates threads for threads that are already sandboxed
};
inline constexpr size_t kThreadKindCount = 10;

// "vcpu", "virtio-queue", ...: the kind in messages and thread names.
const char* thread_kind_name(ThreadKind kind);

// Applies the program's policy for `kind` to the calling thread. It may
// wait until the policy is ready; a stop requested on `stop` ends the wait
// (the thread then runs unconfined only to see its stop and end).
using ThreadSandboxHook = void (*)(ThreadKind kind, std::stop_token stop);
// Installed once, before the first thread that should be confined starts;
// nullptr removes it.
void set_thread_sandbox_hook(ThreadSandboxHook hook);

// Names the calling thread after `kind` and runs the hook. Threads that
// std::thread did not create (main) call it directly.
void enter_thread_sandbox(ThreadKind kind, std::stop_token stop = {});
// Whether the calling thread has entered a sandbox (the hook ran).
bool thread_in_sandbox();

using ThreadBody = std::move_only_function<void(std::stop_token)>;

// A thread of `kind` that enters its sandbox, then runs body. Created here,
// or by the installed launcher when the caller is already sandboxed.
std::jthread start_thread(ThreadKind kind, ThreadBody body);

// The thread that creates threads on behalf of sandboxed ones. Started by
// main before any sandbox; start_thread uses it once installed.
class ThreadLauncher {
 public:
  static std::unique_ptr<ThreadLauncher> start();
  ~ThreadLauncher();  // uninstalls itself if installed, stops and joins
  ThreadLauncher(const ThreadLauncher&) = delete;
  ThreadLauncher& operator=(const ThreadLauncher&) = delete;

  void install();  // start_thread from sandboxed threads goes through it
  // Runs `entry` on a new std::jthread created by the launcher thread.
  std::jthread launch(ThreadBody entry);

 private:
  struct State;
  explicit ThreadLauncher(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace tern

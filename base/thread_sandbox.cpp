#include "base/thread_sandbox.h"

#include <pthread.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <future>
#include <mutex>

namespace tern {
namespace {

struct KindNames {
  const char* kind;
  const char* thread;  // at most 15 characters (pthread_setname_np)
};

constexpr KindNames kNames[kThreadKindCount] = {
    {"main", "tern"},          {"vcpu", "tern-vcpu"},       {"virtio-queue", "tern-queue"},
    {"io-worker", "tern-io"},  {"control", "tern-control"}, {"api", "tern-api"},
    {"signal", "tern-signal"}, {"console-in", "tern-con-in"}, {"console-out", "tern-con-out"},
    {"launcher", "tern-launcher"},
};

std::atomic<ThreadSandboxHook> g_hook{nullptr};
std::atomic<ThreadLauncher*> g_launcher{nullptr};
thread_local bool t_in_sandbox = false;

}  // namespace

const char* thread_kind_name(ThreadKind kind) { return kNames[static_cast<size_t>(kind)].kind; }

void set_thread_sandbox_hook(ThreadSandboxHook hook) { g_hook.store(hook); }

void enter_thread_sandbox(ThreadKind kind, std::stop_token stop) {
  // The main thread keeps the process's name, which ps and pidof show.
  if (kind != ThreadKind::Main) pthread_setname_np(pthread_self(), kNames[static_cast<size_t>(kind)].thread);
  if (ThreadSandboxHook hook = g_hook.load()) {
    hook(kind, std::move(stop));
    t_in_sandbox = true;
  }
}

bool thread_in_sandbox() { return t_in_sandbox; }

std::jthread start_thread(ThreadKind kind, ThreadBody body) {
  ThreadBody entry = [kind, body = std::move(body)](std::stop_token stop) mutable {
    enter_thread_sandbox(kind, stop);
    body(std::move(stop));
  };
  ThreadLauncher* launcher = g_launcher.load();
  if (t_in_sandbox && launcher) return launcher->launch(std::move(entry));
  return std::jthread(std::move(entry));
}

struct ThreadLauncher::State {
  struct Request {
    ThreadBody entry;
    std::promise<std::jthread> thread;
  };
  std::mutex mutex;
  std::condition_variable_any wake;
  std::deque<Request> requests;  // guarded by mutex
  std::jthread thread;

  void serve(std::stop_token stop) {
    for (;;) {
      Request r;
      {
        std::unique_lock lock(mutex);
        wake.wait(lock, stop, [&] { return !requests.empty(); });
        if (requests.empty()) return;  // stopped
        r = std::move(requests.front());
        requests.pop_front();
      }
      r.thread.set_value(std::jthread(std::move(r.entry)));
    }
  }
};

ThreadLauncher::ThreadLauncher(std::unique_ptr<State> state) : state_(std::move(state)) {}

std::unique_ptr<ThreadLauncher> ThreadLauncher::start() {
  auto state = std::make_unique<State>();
  // The launcher thread: creates the threads that sandboxed threads ask
  // for (a vCPU activating a virtio queue), so that they inherit the
  // launcher's filter rather than the asker's.
  state->thread = std::jthread([s = state.get()](std::stop_token stop) {
    enter_thread_sandbox(ThreadKind::Launcher, stop);
    s->serve(stop);
  });
  return std::unique_ptr<ThreadLauncher>(new ThreadLauncher(std::move(state)));
}

ThreadLauncher::~ThreadLauncher() {
  ThreadLauncher* self = this;
  g_launcher.compare_exchange_strong(self, nullptr);
  state_->thread.request_stop();
  state_->thread.join();
  // Requests that came after the stop: their threads start here.
  for (auto& r : state_->requests) r.thread.set_value(std::jthread(std::move(r.entry)));
}

void ThreadLauncher::install() { g_launcher.store(this); }

std::jthread ThreadLauncher::launch(ThreadBody entry) {
  std::future<std::jthread> made;
  {
    std::lock_guard lock(state_->mutex);
    state_->requests.push_back(State::Request{std::move(entry), {}});
    made = state_->requests.back().thread.get_future();
  }
  state_->wake.notify_one();
  return made.get();
}

}  // namespace tern

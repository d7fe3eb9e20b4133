// start_thread (base/thread_sandbox.h): the thread is named after its kind
// and runs the installed hook before its body; a thread started from a
// confined thread is created by the launcher, which entered its own
// sandbox first.
#include "base/thread_sandbox.h"

#include <gtest/gtest.h>
#include <pthread.h>

#include <mutex>
#include <string>
#include <vector>

namespace tern {
namespace {

std::mutex g_mutex;
std::vector<ThreadKind> g_entered;  // guarded by g_mutex

void record(ThreadKind kind, std::stop_token) {
  std::lock_guard lock(g_mutex);
  g_entered.push_back(kind);
}

std::string own_name() {
  char name[16] = {};
  pthread_getname_np(pthread_self(), name, sizeof name);
  return name;
}

TEST(ThreadSandbox, ThreadsAreNamedAfterTheirKind) {
  std::string name;
  start_thread(ThreadKind::VirtioQueue, [&](std::stop_token) { name = own_name(); }).join();
  EXPECT_EQ(name, "tern-queue");
  EXPECT_STREQ(thread_kind_name(ThreadKind::VirtioQueue), "virtio-queue");
  EXPECT_FALSE(thread_in_sandbox());  // no hook: nothing confined
}

TEST(ThreadSandbox, TheHookRunsFirstAndConfinedThreadsLaunchThroughTheLauncher) {
  set_thread_sandbox_hook(record);
  auto launcher = ThreadLauncher::start();
  launcher->install();
  bool inner_ran = false, outer_in_sandbox = false;
  std::string inner_name;
  start_thread(ThreadKind::Vcpu, [&](std::stop_token) {
    outer_in_sandbox = thread_in_sandbox();
    start_thread(ThreadKind::IoWorker, [&](std::stop_token) {
      inner_ran = true;
      inner_name = own_name();
    }).join();
  }).join();
  launcher.reset();
  set_thread_sandbox_hook(nullptr);
  EXPECT_TRUE(outer_in_sandbox);
  EXPECT_TRUE(inner_ran);
  EXPECT_EQ(inner_name, "tern-io");
  std::lock_guard lock(g_mutex);
  // The launcher entered its sandbox before it created anything.
  ASSERT_EQ(g_entered.size(), 3u);
  EXPECT_EQ(g_entered[2], ThreadKind::IoWorker);
  EXPECT_TRUE((g_entered[0] == ThreadKind::Launcher && g_entered[1] == ThreadKind::Vcpu) ||
              (g_entered[0] == ThreadKind::Vcpu && g_entered[1] == ThreadKind::Launcher));
}

}  // namespace
}  // namespace tern

#include <fcntl.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <future>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "api/client.h"
#include "api/control_channel.h"
#include "api/http_server.h"
#include "base/unique_fd.h"

namespace tern::api {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;

// A VM with one 64 MiB raw disk "disk0" and one read-only disk "ro".
class FakeControl final : public VmmControl {
 public:
  ControlResult<VmInfo> info() override {
    std::lock_guard lock(mutex);
    VmInfo vm{"Running", 2, 512 << 20, "/k", "console=ttyS0", {}};
    vm.disks.push_back(DiskInfo{"disk0", "/d.img", "raw", size, false, 2, 256, "mmio"});
    vm.disks.push_back(DiskInfo{"ro", "/ro.img", "qcow2", 1 << 20, true, 1, 256});
    return vm;
  }
  ControlResult<std::vector<DiskCounters>> counters() override {
    return std::vector<DiskCounters>{DiskCounters{.id = "disk0", .counters = {.read_ops = 3, .read_bytes = 12288}}};
  }
  ControlResult<void> resize_disk(const std::string& id, uint64_t desired) override {
    std::lock_guard lock(mutex);
    if (id == "ro") return control_error(ControlErrc::Refused, "disk 'ro' is read-only");
    if (id != "disk0") return control_error(ControlErrc::NotFound, "no disk '" + id + "'");
    if (desired < size) return control_error(ControlErrc::Refused, "shrinking is not supported");
    size = desired;
    ++resizes;
    return {};
  }
  ControlResult<void> shutdown_vm() override { ++shutdowns; return {}; }
  ControlResult<void> shutdown_vmm() override { ++shutdowns; return {}; }
  ControlResult<void> power_button() override {
    if (vm_gone) return control_error(ControlErrc::Unavailable, "the VM is shutting down");
    ++presses;
    return {};
  }

  std::mutex mutex;
  uint64_t size = 64 << 20;  // guarded by mutex
  int resizes = 0;           // guarded by mutex
  std::atomic<int> shutdowns{0};
  std::atomic<int> presses{0};
  std::atomic<bool> vm_gone{false};
};

class ApiServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/tern-api-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir = tmpl;
    path = dir + "/api.sock";
    HttpServerOptions options;
    options.read_timeout = 300ms;  // short, so slow-client cases finish fast
    auto server_or = HttpServer::start(path, control, options);
    ASSERT_TRUE(server_or.has_value()) << server_or.error().message();
    server = std::move(*server_or);
  }
  void TearDown() override {
    server.reset();
    ::rmdir(dir.c_str());
  }

  HttpReply request(const std::string& method, const std::string& target, const std::string& body = {}) {
    auto reply = http_request(path, method, target, body);
    EXPECT_TRUE(reply.has_value()) << reply.error();
    return reply.value_or(HttpReply{});
  }

  // Sends raw bytes on a fresh connection and returns what comes back before
  // the server closes (or the read times out).
  std::string raw(const std::string& bytes, bool half_close = true) {
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
    if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) return "connect failed";
    timeval tv{2, 0};
    ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    size_t sent = 0;
    while (sent < bytes.size()) {
      ssize_t n = ::send(fd.get(), bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) break;
      sent += static_cast<size_t>(n);
    }
    if (half_close) ::shutdown(fd.get(), SHUT_WR);
    std::string out;
    std::array<char, 4096> buf;
    for (;;) {
      ssize_t n = ::recv(fd.get(), buf.data(), buf.size(), 0);
      if (n <= 0) break;
      out.append(buf.data(), static_cast<size_t>(n));
    }
    return out;
  }

  std::string curl(const std::string& args) {
    std::string cmd = "curl -s -o - -w '\\n%{http_code}' --unix-socket " + path + " " + args;
    std::string out;
    FILE* p = ::popen(cmd.c_str(), "r");
    if (!p) return out;
    std::array<char, 512> buf;
    size_t n;
    while ((n = std::fread(buf.data(), 1, buf.size(), p)) > 0) out.append(buf.data(), n);
    ::pclose(p);
    return out;
  }

  FakeControl control;
  std::string dir, path;
  std::unique_ptr<HttpServer> server;
};

TEST_F(ApiServerTest, SocketIsMode0600) {
  struct stat st{};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0600u);
}

TEST_F(ApiServerTest, PingInfoCountersAnswerJson) {
  auto ping = request("GET", "/api/v1/vmm.ping");
  EXPECT_EQ(ping.status, 200);
  EXPECT_EQ(json::parse(ping.body)["version"], "0.1.0");
  auto info = json::parse(request("GET", "/api/v1/vm.info").body);
  EXPECT_EQ(info["state"], "Running");
  EXPECT_EQ(info["config"]["disks"][0]["id"], "disk0");
  EXPECT_EQ(info["config"]["disks"][0]["size"], 64 << 20);
  EXPECT_EQ(info["config"]["disks"][1]["readonly"], true);
  EXPECT_EQ(info["config"]["disks"][0]["transport"], "mmio");
  EXPECT_EQ(info["config"]["disks"][1]["transport"], "pci");
  auto counters = json::parse(request("GET", "/api/v1/vm.counters").body);
  EXPECT_EQ(counters["disk0"]["read_ops"], 3);
}

TEST_F(ApiServerTest, ResizeThroughCurlAnswers204AndReachesTheVm) {
  std::string out = curl("-X PUT -H 'Content-Type: application/json' "
                         "-d '{\"id\":\"disk0\",\"desired_size\":134217728}' "
                         "http://localhost/api/v1/vm.resize-disk");
  EXPECT_EQ(out, "\n204");
  std::lock_guard lock(control.mutex);
  EXPECT_EQ(control.size, 128u << 20);
  EXPECT_EQ(control.resizes, 1);
}

TEST_F(ApiServerTest, RefusedResizesAre4xxAndLeaveTheDiskAlone) {
  struct Case {
    std::string body;
    int status;
  } cases[] = {
      {R"({"id":"disk0","desired_size":1048576})", 409},         // shrink
      {R"({"id":"ro","desired_size":134217728})", 409},          // read-only
      {R"({"id":"nope","desired_size":134217728})", 404},        // unknown disk
      {R"({"id":"disk0","desired_size":134217729})", 400},       // not a multiple of 512
      {R"({"id":"disk0","desired_size":18446744073709551616})", 400},  // overflows u64
      {R"({"id":"disk0","desired_size":-512})", 400},
      {R"({"id":"disk0","desired_size":"1G"})", 400},            // wrong type
      {R"({"id":7,"desired_size":512})", 400},
      {R"({"id":"disk0"})", 400},                                // missing field
      {R"({"id":"disk0","desired_size":512,"extra":1})", 400},   // unknown field
      {R"([1,2])", 400},
      {R"({"id":"disk0",)", 400},                                // malformed JSON
      {"", 400},                                                 // missing body
  };
  for (const Case& c : cases) {
    auto reply = request("PUT", "/api/v1/vm.resize-disk", c.body);
    EXPECT_EQ(reply.status, c.status) << c.body;
    EXPECT_TRUE(json::parse(reply.body, nullptr, false).contains("error")) << reply.body;
  }
  std::lock_guard lock(control.mutex);
  EXPECT_EQ(control.size, 64u << 20);
  EXPECT_EQ(control.resizes, 0);
}

TEST_F(ApiServerTest, UnknownPathIs404AndWrongMethodIs405WithAllow) {
  EXPECT_EQ(request("GET", "/api/v1/vm.nothing").status, 404);
  EXPECT_EQ(request("GET", "/").status, 404);
  std::string out = raw("GET /api/v1/vm.resize-disk HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_NE(out.find("405"), std::string::npos) << out;
  EXPECT_NE(out.find("Allow: PUT"), std::string::npos) << out;
  EXPECT_EQ(request("PUT", "/api/v1/vmm.ping").status, 405);
  EXPECT_EQ(request("DELETE", "/api/v1/vm.info").status, 405);
}

TEST_F(ApiServerTest, HugeBodyIs413) {
  std::string body(1 << 20, 'x');
  std::string out = raw("PUT /api/v1/vm.resize-disk HTTP/1.1\r\nHost: x\r\nContent-Length: " +
                        std::to_string(body.size()) + "\r\n\r\n" + body);
  EXPECT_NE(out.find("413"), std::string::npos) << out.substr(0, 200);
}

TEST_F(ApiServerTest, ShutdownRoutesReachTheVm) {
  EXPECT_EQ(request("PUT", "/api/v1/vm.shutdown").status, 204);
  EXPECT_EQ(request("PUT", "/api/v1/vmm.shutdown").status, 204);
  EXPECT_EQ(control.shutdowns.load(), 2);
}

TEST_F(ApiServerTest, PowerButtonPressesTheButtonAndLeavesTheVmRunning) {
  EXPECT_EQ(request("PUT", "/api/v1/vm.power-button").status, 204);
  EXPECT_EQ(control.presses.load(), 1);
  EXPECT_EQ(control.shutdowns.load(), 0);  // the guest, not tern, decides to power off
  EXPECT_EQ(request("GET", "/api/v1/vm.power-button").status, 405);
  control.vm_gone = true;
  EXPECT_EQ(request("PUT", "/api/v1/vm.power-button").status, 503);
  EXPECT_EQ(control.presses.load(), 1);
}

TEST_F(ApiServerTest, LiveSocketRefusedStaleSocketReplaced) {
  FakeControl other;
  auto second = HttpServer::start(path, other);
  ASSERT_FALSE(second.has_value());
  EXPECT_EQ(second.error().code, ServerErrc::InUse);
  EXPECT_NE(second.error().message().find(path), std::string::npos);

  // A socket file with nobody behind it is stale and gets replaced.
  std::string stale = dir + "/stale.sock";
  {
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, stale.c_str(), sizeof addr.sun_path - 1);
    ASSERT_EQ(::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  }
  auto replaced = HttpServer::start(stale, other);
  ASSERT_TRUE(replaced.has_value()) << replaced.error().message();
  auto reply = http_request(stale, "GET", "/api/v1/vmm.ping");
  ASSERT_TRUE(reply.has_value());
  EXPECT_EQ(reply->status, 200);
  replaced->reset();
  EXPECT_NE(::access(stale.c_str(), F_OK), 0) << "socket file removed on exit";

  // A regular file is never deleted.
  std::string file = dir + "/file";
  std::fclose(std::fopen(file.c_str(), "w"));
  auto refused = HttpServer::start(file, other);
  ASSERT_FALSE(refused.has_value());
  EXPECT_EQ(refused.error().code, ServerErrc::NotASocket);
  ::unlink(file.c_str());
}

// At least 1,000 malformed or hostile requests, several clients at once;
// afterwards the server still answers and the VM saw no bogus command.
TEST_F(ApiServerTest, ThousandsOfBadRequestsLeaveTheServerServing) {
  std::vector<std::string> bad = {
      "garbage\r\n\r\n",
      "GET\r\n\r\n",
      "GET /api/v1/vmm.ping HTTP/9.9\r\n\r\n",
      "PUT /api/v1/vm.resize-disk HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n{\"id",
      "PUT /api/v1/vm.resize-disk HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n",
      "PUT /api/v1/vm.resize-disk HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
      "PUT /api/v1/vm.resize-disk HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
      "PUT /api/v1/vm.resize-disk HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nnull",
      "PUT /api/v1/vm.resize-disk HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}",
      "PUT /api/v1/vm.resize-disk HTTP/1.1\r\nHost: x\r\nContent-Length: 36\r\n\r\n{\"id\":\"disk0\",\"desired_size\":1.5e3}",
      "POST /api/v1/vmm.ping HTTP/1.1\r\nHost: x\r\n\r\n",
      "GET /../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n",
      "GET /api/v1/vmm.ping HTTP/1.1\r\nX: " + std::string(64 * 1024, 'a') + "\r\n\r\n",
      std::string("\0\0\0\0GET /\r\n\r\n", 14),
      "GET /api/v1/vmm.ping HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n",  // body never comes
      "GET /api/v1/vm",  // partial request line, then silence
  };
  std::mt19937 rng(1234);
  for (int i = 0; i < 40; ++i) {
    std::string junk(64 + rng() % 512, '\0');
    for (char& ch : junk) ch = static_cast<char>(rng());
    bad.push_back(junk);
  }
  constexpr int kThreads = 8;
  constexpr int kPerThread = 130;  // 1,040 requests in all
  std::atomic<int> sent{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        const std::string& req = bad[(t * kPerThread + i) % bad.size()];
        // Every 13th client keeps its connection open without finishing:
        // the server's read deadline must drop it.
        raw(req, /*half_close=*/i % 13 != 0);
        ++sent;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_GE(sent.load(), 1000);
  auto ping = request("GET", "/api/v1/vmm.ping");
  EXPECT_EQ(ping.status, 200);
  std::lock_guard lock(control.mutex);
  EXPECT_EQ(control.size, 64u << 20);
  EXPECT_EQ(control.resizes, 0);
  EXPECT_EQ(control.shutdowns.load(), 0);
}

// A connected client socket, or an invalid fd.
UniqueFd connect_to(const std::string& path) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) return UniqueFd();
  return fd;
}

bool send_all(int fd, const std::string& bytes) {
  size_t sent = 0;
  while (sent < bytes.size()) {
    ssize_t n = ::send(fd, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) return false;
    sent += static_cast<size_t>(n);
  }
  return true;
}

// How many writes of `size` bytes a Unix stream socket takes before the
// writer would block while its peer reads nothing (the kernel charges each
// write's buffer to the writer's SO_SNDBUF, which the server's accepted
// sockets share with this socketpair: both have the system default).
size_t writes_until_full(size_t size) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return 0;
  UniqueFd a(sv[0]), b(sv[1]);
  std::string chunk(size, 'x');
  size_t n = 0;
  while (::send(a.get(), chunk.data(), chunk.size(), MSG_DONTWAIT | MSG_NOSIGNAL) ==
         static_cast<ssize_t>(chunk.size())) {
    ++n;
  }
  return n;
}

// A client that pipelines requests and never reads the replies fills its
// socket. Whatever the server must write next (here the error reply to a
// malformed request, after which it would close) may wait for that client
// only under a deadline and never on the API thread: other clients are
// served meanwhile, and the server (so tern) stops at once.
TEST_F(ApiServerTest, ClientThatNeverReadsBlocksNeitherOthersNorShutdown) {
  const std::string ping = "GET /api/v1/vmm.ping HTTP/1.1\r\nHost: x\r\n\r\n";
  // One keep-alive ping reply, byte for byte, to size the pipelines.
  size_t reply_size = 0;
  {
    UniqueFd fd = connect_to(path);
    ASSERT_TRUE(fd);
    ASSERT_TRUE(send_all(fd.get(), ping + "GET /api/v1/vmm.ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
    timeval tv{10, 0};
    ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    std::string out;
    std::array<char, 4096> buf;
    for (ssize_t n; (n = ::recv(fd.get(), buf.data(), buf.size(), 0)) > 0;) out.append(buf.data(), static_cast<size_t>(n));
    size_t second = out.find("HTTP/1.1", 1);
    ASSERT_NE(second, std::string::npos) << out;
    reply_size = second;
  }
  size_t fit = writes_until_full(reply_size);
  ASSERT_GT(fit, 4u);
  // Around the number of replies that fill the socket, so that on one of
  // these connections the error reply is the write that finds it full.
  std::vector<UniqueFd> hogs;
  for (size_t pings = fit - 3; pings <= fit + 3; ++pings) {
    UniqueFd fd = connect_to(path);
    ASSERT_TRUE(fd);
    std::string pipeline;
    for (size_t i = 0; i < pings; ++i) pipeline += ping;
    pipeline += "garbage\r\n\r\n";
    ASSERT_TRUE(send_all(fd.get(), pipeline));
    hogs.push_back(std::move(fd));
  }
  // The server is past the replies that fit on the aligned connection (the
  // one with `fit` pings), so its next step is the error reply.
  for (int i = 0; i < 10'000; ++i) {
    int queued = 0;
    if (::ioctl(hogs[3].get(), FIONREAD, &queued) != 0 || static_cast<size_t>(queued) >= fit * reply_size) break;
    std::this_thread::sleep_for(1ms);
  }
  // Other clients are answered while those replies wait (raw clients: their
  // wait for the answer is bounded, whatever the server does).
  for (int round = 0; round < 2; ++round) {
    UniqueFd probe = connect_to(path);
    ASSERT_TRUE(probe);
    ASSERT_TRUE(send_all(probe.get(), "GET /api/v1/vmm.ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
    pollfd p{probe.get(), POLLIN, 0};
    bool answered = ::poll(&p, 1, 10'000) == 1;
    EXPECT_TRUE(answered) << "no answer in 10 s: the API thread is stuck writing to a client that does not read";
    std::array<char, 512> buf;
    ssize_t n = answered ? ::recv(probe.get(), buf.data(), buf.size(), 0) : 0;
    EXPECT_TRUE(!answered || (n > 0 && std::string(buf.data(), static_cast<size_t>(n)).starts_with("HTTP/1.1 200")));
  }
  // And the server stops without waiting for them.
  auto stopped = std::async(std::launch::async, [this] { server.reset(); });
  bool in_time = stopped.wait_for(10s) == std::future_status::ready;
  EXPECT_TRUE(in_time) << "the server did not stop while a client did not read its replies";
  hogs.clear();  // lets a stuck server go, so that this test ends either way
  stopped.wait();
}

// A reply the client does not take within write_timeout ends its
// connection: the client sees the server hang up.
TEST_F(ApiServerTest, ReplyNotTakenWithinTheWriteDeadlineDropsTheClient) {
  server.reset();
  HttpServerOptions options;
  options.write_timeout = 200ms;
  auto started = HttpServer::start(path, control, options);
  ASSERT_TRUE(started.has_value()) << started.error().message();
  server = std::move(*started);
  UniqueFd hog = connect_to(path);
  ASSERT_TRUE(hog);
  std::string pipeline;
  for (int i = 0; i < 4000; ++i) pipeline += "GET /api/v1/vmm.ping HTTP/1.1\r\nHost: x\r\n\r\n";
  ASSERT_TRUE(send_all(hog.get(), pipeline));
  pollfd p{hog.get(), POLLRDHUP, 0};
  ASSERT_EQ(::poll(&p, 1, 30'000), 1) << "the server kept a client that takes no replies";
  EXPECT_TRUE(p.revents & POLLRDHUP);
  EXPECT_EQ(request("GET", "/api/v1/vmm.ping").status, 200);
}

// The client's timeout bounds the whole exchange, also against a server
// that accepts and never answers.
TEST(ApiClient, GivesUpAtItsDeadlineOnAServerThatNeverAnswers) {
  char tmpl[] = "/tmp/tern-api-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  std::string path = std::string(tmpl) + "/mute.sock";
  UniqueFd listener(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
  ASSERT_EQ(::bind(listener.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::listen(listener.get(), 4), 0);
  auto asked = std::async(std::launch::async, [&] { return http_request(path, "GET", "/api/v1/vmm.ping", {}, 300ms); });
  bool in_time = asked.wait_for(10s) == std::future_status::ready;
  EXPECT_TRUE(in_time) << "the client waited past its timeout";
  if (!in_time) {
    UniqueFd accepted(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));  // hang up on it
  }
  auto reply = asked.get();
  EXPECT_FALSE(reply.has_value());
  ::unlink(path.c_str());
  ::rmdir(tmpl);
}

TEST(ControlChannel, RunsCommandsOnTheOwnerThreadAndAbandonsOnClose) {
  auto channel = ControlChannel::create();
  ASSERT_TRUE(channel.has_value());
  std::thread::id owner_id;
  std::atomic<bool> stop{false};
  std::thread owner([&] {
    owner_id = std::this_thread::get_id();
    while (!stop) {
      (*channel)->run_pending();
      std::this_thread::sleep_for(1ms);
    }
  });
  auto where = (*channel)->call<std::thread::id>([] { return std::this_thread::get_id(); }, 5s);
  ASSERT_TRUE(where.has_value());
  stop = true;
  owner.join();
  EXPECT_EQ(*where, owner_id);
  (*channel)->close();
  auto after = (*channel)->call<int>([] { return 1; }, 5s);
  EXPECT_FALSE(after.has_value());
}

}  // namespace
}  // namespace tern::api

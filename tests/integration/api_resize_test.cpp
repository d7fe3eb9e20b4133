// Live resize end to end (label kvm): build/tern runs the test guest in its
// `idle` mode with a 2-queue disk and the API on a Unix socket; a real client
// (curl, then tern-remote) grows the disk; the guest reports each new
// capacity and writes and reads past the old end. Then 1,000+ malformed
// requests hit the live API, after which it still answers and the guest
// still completes I/O. Finally the host checks what the guest wrote and,
// for qcow2, that `qemu-img check` is clean.
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <array>
#include <chrono>
#include <cstring>
#include <random>
#include <string>
#include <thread>

#include "tests/integration/virtio_blk_guest.h"

namespace tern::it {
namespace {

using namespace std::chrono_literals;

std::string slurp(const std::string& path) {
  auto bytes = read_file(path);
  return std::string(bytes.begin(), bytes.end());
}

// Sends raw bytes on one connection and reads until the server closes it.
void send_raw(const std::string& socket_path, const std::string& bytes, bool half_close) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, socket_path.c_str(), sizeof addr.sun_path - 1);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
    timeval tv{3, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    (void)!::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (half_close) ::shutdown(fd, SHUT_WR);
    std::array<char, 4096> buf;
    while (::recv(fd, buf.data(), buf.size(), 0) > 0) {
    }
  }
  ::close(fd);
}

class ApiResize : public VirtioBlkGuest {
 protected:
  // Starts tern in the background with the guest idle after its checks.
  void start(const std::string& disk_arg, const std::string& guest_cmdline = "idle") {
    sock_ = dir_ + "/api.sock";
    serial_ = dir_ + "/serial.log";
    std::string tern = build_dir() + "/tern";
    std::string guest = build_dir() + "/tests/guest/tern-test-guest";
    pid_ = ::fork();
    if (pid_ == 0) {
      ::execl(tern.c_str(), tern.c_str(), "--kernel", guest.c_str(), "--memory", "size=128M", "--cmdline",
              guest_cmdline.c_str(), "--disk", disk_arg.c_str(), "--api-socket", sock_.c_str(), "--serial",
              ("file=" + serial_).c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    ASSERT_GT(pid_, 0);
    ASSERT_TRUE(wait_serial("\nidle\n", 1)) << slurp(serial_);  // the idle loop, not the command line echo
  }

  // Waits until `text` appears `count` times on the guest's console.
  bool wait_serial(const std::string& text, int count, std::chrono::seconds limit = 120s) {
    auto end = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < end) {
      std::string out = slurp(serial_);
      int seen = 0;
      for (size_t at = out.find(text); at != std::string::npos; at = out.find(text, at + 1)) ++seen;
      if (seen >= count) return true;
      int status;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return false;
      }
      std::this_thread::sleep_for(50ms);
    }
    return false;
  }

  int stop_with_tern_remote() {
    Shell r = sh(build_dir() + "/tern-remote --api-socket " + sock_ + " shutdown");
    EXPECT_EQ(r.status, 0) << r.out;
    int status = -1;
    if (pid_ > 0 && ::waitpid(pid_, &status, 0) == pid_) pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

  void TearDown() override {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    VirtioBlkGuest::TearDown();
  }

  std::string curl_resize(const std::string& body) {
    return sh("curl -s -o /dev/null -w '%{http_code}' --unix-socket " + sock_ +
              " -X PUT -H 'Content-Type: application/json' -d '" + body +
              "' http://localhost/api/v1/vm.resize-disk")
        .out;
  }

  // Grows the disk twice (curl, then tern-remote) and checks the guest sees
  // each size and does I/O past the old end; checks refusals on the way.
  void grow_twice(const std::string& id) {
    EXPECT_EQ(curl_resize(R"({"id":")" + id + R"(","desired_size":134217728})"), "204");
    ASSERT_TRUE(wait_serial("capacity 262144\n", 1)) << slurp(serial_);
    ASSERT_TRUE(wait_serial("write and read past the old end", 1)) << slurp(serial_);

    Shell grow = sh(build_dir() + "/tern-remote --api-socket " + sock_ + " resize-disk --disk " + id +
                    " --size 256M");
    EXPECT_EQ(grow.status, 0) << grow.out;
    ASSERT_TRUE(wait_serial("capacity 524288\n", 1)) << slurp(serial_);
    ASSERT_TRUE(wait_serial("write and read past the old end", 2)) << slurp(serial_);

    // Refusals leave the VM running and the disk as it was.
    EXPECT_EQ(curl_resize(R"({"id":")" + id + R"(","desired_size":67108864})"), "409");
    EXPECT_EQ(curl_resize(R"({"id":")" + id + R"(","desired_size":1000})"), "400");
    EXPECT_EQ(curl_resize(R"({"id":"nope","desired_size":536870912})"), "404");
    Shell info = sh(build_dir() + "/tern-remote --api-socket " + sock_ + " --output json info");
    EXPECT_NE(info.out.find("268435456"), std::string::npos) << info.out;
  }

  // What the guest wrote past each old end: sector S holds ~(S*64+k).
  static void expect_past_end_writes(const std::vector<uint8_t>& image) {
    ASSERT_EQ(image.size(), 256ull << 20);
    for (uint64_t sector : {131072ull, 262144ull}) {
      for (uint64_t k : {0ull, 63ull}) EXPECT_EQ(word(image, sector, k), ~(sector * 64 + k)) << sector;
    }
  }

  pid_t pid_ = -1;
  std::string sock_, serial_;
};

TEST_F(ApiResize, RawDiskGrowsWhileTheGuestRuns) {
  std::string disk = raw_image();
  start("path=" + disk + ",id=data,num_queues=2");
  grow_twice("data");
  // The power button reaches the VM; this guest has no ACPI and runs on
  // (tests/linux has a guest that shuts down on it).
  Shell press = sh(build_dir() + "/tern-remote --api-socket " + sock_ + " power-button");
  EXPECT_EQ(press.status, 0) << press.out;
  EXPECT_NE(press.out.find("power button pressed"), std::string::npos) << press.out;
  Shell info = sh(build_dir() + "/tern-remote --api-socket " + sock_ + " info");
  EXPECT_NE(info.out.find("state: Running"), std::string::npos) << info.out;
  EXPECT_EQ(stop_with_tern_remote(), 0);
  expect_past_end_writes(read_file(disk));
}

// The configuration-change interrupt over virtio-mmio: InterruptStatus bit 1
// on the device's one line, then the new capacity under a new generation.
TEST_F(ApiResize, MmioRawDiskGrowsWhileTheGuestRuns) {
  std::string disk = raw_image();
  start("path=" + disk + ",id=data,num_queues=2,transport=mmio", "idle transport=mmio");
  grow_twice("data");
  EXPECT_EQ(stop_with_tern_remote(), 0);
  expect_past_end_writes(read_file(disk));
}

TEST_F(ApiResize, Qcow2DiskGrowsAndSurvivesAThousandBadRequests) {
  std::string disk = qcow2_image();
  start("path=" + disk + ",id=data,num_queues=2");
  grow_twice("data");

  std::vector<std::string> bad = {
      "garbage\r\n\r\n",
      "PUT /api/v1/vm.resize-disk HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n{\"id",
      "PUT /api/v1/vm.resize-disk HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}",
      "PUT /api/v1/vm.resize-disk HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999\r\n\r\n",
      "PUT /api/v1/vm.resize-disk HTTP/1.1\r\nHost: x\r\nContent-Length: 41\r\n\r\n{\"id\":\"data\",\"desired_size\":\"1T\",\"x\":1}",
      "PUT /api/v1/vm.resize-disk HTTP/1.1\r\nHost: x\r\nContent-Length: 38\r\n\r\n{\"id\":\"data\",\"desired_size\":-4096000}",
      "DELETE /api/v1/vm.info HTTP/1.1\r\nHost: x\r\n\r\n",
      "GET /api/v1/../../x HTTP/1.1\r\nHost: x\r\n\r\n",
      "GET /api/v1/vmm.ping HTTP/1.1\r\nX: " + std::string(40000, 'a') + "\r\n\r\n",
      "GET /api/v1/vm",
  };
  std::mt19937 rng(7);
  for (int i = 0; i < 20; ++i) {
    std::string junk(200, '\0');
    for (char& ch : junk) ch = static_cast<char>(rng());
    bad.push_back(junk);
  }
  std::vector<std::thread> clients;
  for (int t = 0; t < 4; ++t) {
    clients.emplace_back([&, t] {
      for (int i = 0; i < 260; ++i) send_raw(sock_, bad[(t * 260 + i) % bad.size()], true);
    });
  }
  for (auto& c : clients) c.join();  // 1,040 malformed requests

  Shell ping = sh(build_dir() + "/tern-remote --api-socket " + sock_ + " ping");
  EXPECT_EQ(ping.status, 0) << ping.out;
  // The guest still does I/O: one more grow, seen and written past.
  EXPECT_EQ(curl_resize(R"({"id":"data","desired_size":536870912})"), "204");
  ASSERT_TRUE(wait_serial("capacity 1048576\n", 1)) << slurp(serial_);
  ASSERT_TRUE(wait_serial("write and read past the old end", 3)) << slurp(serial_);
  EXPECT_EQ(stop_with_tern_remote(), 0);

  Shell check = sh("qemu-img check " + disk);
  EXPECT_EQ(check.status, 0) << check.out;
  std::string raw = dir_ + "/back.raw";
  Shell conv = sh("qemu-img convert -O raw " + disk + " " + raw);
  ASSERT_EQ(conv.status, 0) << conv.out;
  auto image = read_file(raw);
  ASSERT_EQ(image.size(), 512ull << 20);
  EXPECT_EQ(word(image, 524288, 0), ~(524288ull * 64));  // written past the third grow's old end
  image.resize(256ull << 20);
  expect_past_end_writes(image);
}

}  // namespace
}  // namespace tern::it

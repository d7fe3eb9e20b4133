// ConsoleOutput: the console never blocks its writer (a vCPU) and never
// kills tern, whatever the reader does; a file stops at its cap.
#include "devices/console_output.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <future>
#include <string>
#include <vector>

namespace tern::devices {
namespace {

using namespace std::chrono_literals;

struct Pipe {
  Pipe() {
    int fds[2];
    EXPECT_EQ(::pipe2(fds, O_CLOEXEC), 0);
    reader.reset(fds[0]);
    writer.reset(fds[1]);
  }
  UniqueFd reader, writer;
};

std::span<const uint8_t> bytes_of(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

TEST(ConsoleOutput, ReaderGoneCostsDroppedBytesNotTheProcess) {
  ::signal(SIGPIPE, SIG_IGN);  // as tern's main does
  Pipe p;
  auto out = ConsoleOutput::start(std::move(p.writer));
  ASSERT_TRUE(out.has_value());
  p.reader.reset();  // `| head -1` has exited
  (*out)->put(bytes_of("first"));
  ASSERT_TRUE((*out)->drain(30s));
  (*out)->put(bytes_of("second"));
  ConsoleOutputStats s = (*out)->close();
  EXPECT_EQ(s.written, 0u);
  EXPECT_EQ(s.dropped_gone, 11u);
  EXPECT_EQ(s.write_errno, EPIPE);
}

TEST(ConsoleOutput, StalledReaderNeverBlocksTheWriterNorClose) {
  Pipe p;  // the reader stays open and never reads
  ConsoleOutputOptions o;
  o.buffer_bytes = 64 << 10;
  o.drain_timeout = 100ms;
  auto out = ConsoleOutput::start(std::move(p.writer), o);
  ASSERT_TRUE(out.has_value());
  ConsoleOutput& console = **out;
  // 4 MiB: far more than the pipe and the buffer hold.
  auto writer = std::async(std::launch::async, [&] {
    std::string line(1024, 'x');
    for (int i = 0; i < 4096; ++i) console.put(bytes_of(line));
  });
  ASSERT_EQ(writer.wait_for(60s), std::future_status::ready) << "put() blocked on a stalled reader";
  auto closed = std::async(std::launch::async, [&] { return console.close(); });
  ASSERT_EQ(closed.wait_for(60s), std::future_status::ready) << "close() waited for a stalled reader";
  ConsoleOutputStats s = closed.get();
  EXPECT_GT(s.dropped_full, 0u);
  EXPECT_EQ(s.written + s.dropped(), 4096u * 1024u);
  EXPECT_LE(s.written, 4u << 20);
}

TEST(ConsoleOutput, FileStopsAtMaxBytes) {
  char tmpl[] = "/tmp/tern-console-XXXXXX";
  UniqueFd fd(::mkstemp(tmpl));
  ASSERT_TRUE(fd);
  ConsoleOutputOptions o;
  o.max_bytes = 1000;
  auto out = ConsoleOutput::start(std::move(fd), o);
  ASSERT_TRUE(out.has_value());
  std::string chunk(300, 'y');
  for (int i = 0; i < 10; ++i) (*out)->put(bytes_of(chunk));
  ConsoleOutputStats s = (*out)->close();
  EXPECT_EQ(s.written, 1000u);
  EXPECT_EQ(s.dropped_cap, 2000u);
  struct stat st{};
  ASSERT_EQ(::stat(tmpl, &st), 0);
  EXPECT_EQ(st.st_size, 1000);
  ::unlink(tmpl);
}

}  // namespace
}  // namespace tern::devices

// tern-img io [-c CMD]... FILE: a qemu-io subset through Tern's disk
// interface. Commands: read [-P pattern] OFF LEN (with -P, verifies),
// write [-P pattern] [-z [-u]] OFF LEN, discard OFF LEN, flush, resize SIZE.
#include <chrono>
#include <string>

#include <cstdio>
#include <sstream>
#include <vector>

#include "block/io/wait.h"
#include "block/open.h"
#include "tools/tern_img/verbs.h"

namespace tern::img {
namespace {

struct IoArgs {
  std::vector<std::string> commands;
  std::string file;
  bool read_only = false;
  bool backing = true;
};

// qemu-io's cvtstr(): three decimals unless whole, binary units.
std::string qemu_size(double value) {
  static const char* const kUnits[] = {" bytes", " KiB", " MiB", " GiB", " TiB", " PiB", " EiB"};
  int unit = 0;
  while (unit < 6 && value >= 1024.0) {
    value /= 1024.0;
    ++unit;
  }
  char text[64];
  std::snprintf(text, sizeof text, "%.3f", value);
  std::string s = text;
  if (auto dot = s.find(".000"); dot != std::string::npos) s.erase(dot);
  return s + kUnits[unit];
}

// qemu-io's statistics line: "4 KiB, 1 ops; 00.00 sec (60.542 MiB/sec and 15498.8298 ops/sec)".
void print_stats(uint64_t bytes, double secs) {
  double safe = secs > 0 ? secs : 1e-9;
  auto whole = static_cast<unsigned>(secs);
  auto hundredths = static_cast<unsigned>((secs - whole) * 100);
  std::printf("%s, 1 ops; %02u.%02u sec (%s/sec and %.4f ops/sec)\n", qemu_size(static_cast<double>(bytes)).c_str(),
              whole, hundredths, qemu_size(static_cast<double>(bytes) / safe).c_str(), 1.0 / safe);
}

int run_command(block::DiskFile& disk, block::IoContext& ctx, const std::string& line) {
  std::istringstream in(line);
  std::vector<std::string> words;
  for (std::string w; in >> w;) words.push_back(w);
  if (words.empty()) return 0;
  const std::string verb = words[0];
  int pattern = -1;
  bool zero = false, unmap = false;
  std::vector<uint64_t> numbers;
  for (size_t i = 1; i < words.size(); ++i) {
    if (words[i] == "-P" && i + 1 < words.size()) {
      pattern = static_cast<int>(std::strtol(words[++i].c_str(), nullptr, 0));
    } else if (words[i] == "-z") {
      zero = true;
    } else if (words[i] == "-u") {
      unmap = true;
    } else if (auto n = parse_size(words[i])) {
      numbers.push_back(*n);
    } else {
      std::fprintf(stderr, "tern-img io: bad argument '%s' in '%s'\n", words[i].c_str(), line.c_str());
      return 1;
    }
  }
  auto failed = [&](const block::Error& e) {
    std::fprintf(stderr, "tern-img io: %s failed: %s\n", verb.c_str(), e.message().c_str());
    return 1;
  };
  block::Request req;
  if (verb == "flush") {
    req.op = block::Op::Flush;
    if (auto r = block::io::run_to_completion(ctx, req); !r) return failed(r.error());
    return 0;
  }
  if (verb == "resize" && numbers.size() == 1) {
    if (auto r = disk.resize(numbers[0]); !r) return failed(r.error());
    return 0;
  }
  if (numbers.size() != 2) {
    std::fprintf(stderr, "tern-img io: '%s': expected OFFSET LENGTH\n", line.c_str());
    return 1;
  }
  req.offset = numbers[0];
  req.length = numbers[1];
  std::vector<uint8_t> buf;
  iovec v{};
  if (verb == "read" || (verb == "write" && !zero)) {
    buf.assign(req.length, static_cast<uint8_t>(pattern < 0 ? 0xcd : pattern));
    v = iovec{buf.data(), buf.size()};
    req.iov = std::span<const iovec>(&v, 1);
    req.op = verb == "read" ? block::Op::Read : block::Op::Write;
  } else if (verb == "write") {
    req.op = block::Op::WriteZeroes;
    req.may_unmap = unmap;
  } else if (verb == "discard") {
    req.op = block::Op::Discard;
  } else {
    std::fprintf(stderr, "tern-img io: unknown command '%s'\n", verb.c_str());
    return 1;
  }
  auto started = std::chrono::steady_clock::now();
  if (auto r = block::io::run_to_completion(ctx, req); !r) return failed(r.error());
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  int status = 0;
  if (verb == "read" && pattern >= 0) {
    for (size_t i = 0; i < buf.size(); ++i) {
      if (buf[i] != static_cast<uint8_t>(pattern)) {
        // qemu-io's line, with the first byte that differs.
        std::printf("Pattern verification failed at offset %llu, %llu bytes\n",
                    static_cast<unsigned long long>(req.offset + i),
                    static_cast<unsigned long long>(buf.size() - i));
        status = 1;
        break;
      }
    }
  }
  const char* done = verb == "read" ? "read" : verb == "discard" ? "discarded" : "wrote";
  std::printf("%s %llu/%llu bytes at offset %llu\n", done,
              static_cast<unsigned long long>(req.length), static_cast<unsigned long long>(req.length),
              static_cast<unsigned long long>(req.offset));
  print_stats(req.length, secs);
  return status;
}

int run_io(const IoArgs& a) {
  block::OpenOptions o;
  o.path = a.file;
  o.read_only = a.read_only;
  o.allow_backing = a.backing;
  auto disk = block::open_disk(o);
  if (!disk) {
    std::fprintf(stderr, "tern-img io: %s\n", disk.error().message().c_str());
    return 1;
  }
  auto ctx = (*disk)->make_io_context(4);
  if (!ctx) {
    std::fprintf(stderr, "tern-img io: %s\n", ctx.error().message().c_str());
    return 1;
  }
  int status = 0;
  for (const auto& c : a.commands) {
    if ((status = run_command(**disk, **ctx, c)) != 0) break;
  }
  ctx->reset();
  if (auto r = (*disk)->close(); !r) {
    std::fprintf(stderr, "tern-img io: close: %s\n", r.error().message().c_str());
    return 1;
  }
  return status;
}

}  // namespace

void add_io(CLI::App& app, int& status) {
  auto args = std::make_shared<IoArgs>();
  auto* cmd = app.add_subcommand("io", "run qemu-io style commands on an image");
  cmd->add_option("-c", args->commands, "command (repeatable)")->required();
  cmd->add_flag("-r,--read-only", args->read_only, "open read-only");
  cmd->add_option("file", args->file)->required();
  cmd->callback([args, &status] { status = run_io(*args); });
}

}  // namespace tern::img

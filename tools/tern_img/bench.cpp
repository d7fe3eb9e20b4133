// tern-img bench: qemu-img bench's workload through Tern's disk interface
// (open_disk + one IoContext), so both programs run the same requests:
//   tern-img bench [-f fmt] [-t none|writeback] [-i native] -d DEPTH -c COUNT
//                  -s SIZE [-S STEP] [-o OFFSET] [-w] [--pattern N] [-q QUEUES] FILE
// Sequential requests from OFFSET stepping by STEP (default SIZE), wrapping
// at the end of the disk, DEPTH in flight. Prints the time like qemu-img.
// With -q N (N > 1; not in qemu-img): N IoContexts on N threads against
// the one open image, as a guest's N virtio queues or fio's numjobs; the
// COUNT requests are split into N consecutive runs, one per queue, DEPTH
// in flight on each, and the time is until the last queue is done.
#include <stdlib.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "block/io/wait.h"
#include "block/open.h"
#include "tools/tern_img/verbs.h"

namespace tern::img {
namespace {

struct BenchArgs {
  std::string path, format = "auto", cache = "writeback", aio = "native";
  uint32_t depth = 64;
  uint64_t count = 75000, size = 4096, step = 0, offset = 0;
  bool write = false;
  int pattern = 0;
  uint32_t queues = 1;
};

// One queue's share: requests [first, first + n) of the sequence, DEPTH in
// flight on its own context. Returns an error message, empty on success.
std::string run_queue(tern::block::DiskFile& disk, const BenchArgs& a, uint64_t first, uint64_t n) {
  auto ctx = disk.make_io_context(a.depth);
  if (!ctx) return ctx.error().message();
  const uint64_t disk_size = disk.size();
  std::vector<std::unique_ptr<uint8_t, decltype(&free)>> buffers;
  std::vector<iovec> iovs(a.depth);
  for (uint32_t i = 0; i < a.depth; ++i) {
    void* p = nullptr;
    if (posix_memalign(&p, 4096, a.size) != 0) return "out of memory";
    std::memset(p, a.pattern, a.size);
    buffers.emplace_back(static_cast<uint8_t*>(p), &free);
    iovs[i] = iovec{p, a.size};
  }
  // The offset of request `first`, wrapping as the single-queue run does.
  uint64_t next = a.offset;
  for (uint64_t i = 0; i < first; ++i) {
    if (next + a.size > disk_size) next = 0;
    next += a.step;
  }
  uint64_t submitted = 0, completed = 0;
  std::vector<uint32_t> free_slots;
  for (uint32_t i = 0; i < a.depth; ++i) free_slots.push_back(a.depth - 1 - i);
  std::vector<tern::block::Completion> done;
  while (completed < n) {
    while (submitted < n && !free_slots.empty()) {
      uint32_t slot = free_slots.back();
      free_slots.pop_back();
      if (next + a.size > disk_size) next = 0;
      tern::block::Request r;
      r.op = a.write ? tern::block::Op::Write : tern::block::Op::Read;
      r.offset = next;
      r.iov = std::span<const iovec>(&iovs[slot], 1);
      r.cookie = slot;
      if (auto s = (*ctx)->submit(r); !s) return "submit: " + s.error().message();
      ++submitted;
      next += a.step;
    }
    done.clear();
    (*ctx)->drain(done);
    if (done.empty()) {
      if (auto w = tern::block::io::wait_for_completions(**ctx); !w) return "wait: " + w.error().message();
      continue;
    }
    for (auto& c : done) {
      if (!c.status) return "request failed: " + c.status.error().message();
      free_slots.push_back(static_cast<uint32_t>(c.cookie));
      ++completed;
    }
  }
  return {};
}

int run_bench(BenchArgs a) {
  if (a.step == 0) a.step = a.size;
  if (a.queues == 0 || a.depth == 0) {
    std::fprintf(stderr, "tern-img: bench: -q and -d must be at least 1\n");
    return 1;
  }
  tern::block::OpenOptions o;
  o.path = a.path;
  o.type = tern::block::parse_image_type(a.format).value_or(tern::block::ImageType::Auto);
  o.direct = a.cache == "none";
  o.read_only = !a.write;
  o.allow_backing = true;  // tern-img follows backing files, as qemu-img does
  auto disk = tern::block::open_disk(o);
  if (!disk) {
    std::fprintf(stderr, "tern-img: bench: %s\n", disk.error().message().c_str());
    return 1;
  }
  std::printf("Sending %lu %s requests, %lu bytes each, %u in parallel (starting at offset %lu, step size %lu)\n",
              a.count, a.write ? "write" : "read", a.size, a.depth, a.offset, a.step);
  if (a.queues > 1) std::printf("On %u queues (one thread each), %u in parallel on each\n", a.queues, a.depth);
  std::vector<std::string> errors(a.queues);
  auto start = std::chrono::steady_clock::now();
  if (a.queues == 1) {
    errors[0] = run_queue(**disk, a, 0, a.count);
  } else {
    std::vector<std::jthread> threads;
    for (uint32_t q = 0; q < a.queues; ++q) {
      const uint64_t first = a.count * q / a.queues;
      const uint64_t end = a.count * (q + 1) / a.queues;
      // Each thread drives one IoContext, as a virtio queue's thread does.
      threads.emplace_back([&, q, first, end] { errors[q] = run_queue(**disk, a, first, end - first); });
    }
  }
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  for (uint32_t q = 0; q < a.queues; ++q) {
    if (!errors[q].empty()) {
      std::fprintf(stderr, "tern-img: bench: queue %u: %s\n", q, errors[q].c_str());
      return 1;
    }
  }
  if (auto r = (*disk)->close(); !r) {
    std::fprintf(stderr, "tern-img: bench: close: %s\n", r.error().message().c_str());
    return 1;
  }
  std::printf("Run completed in %.3f seconds.\n", seconds);
  return 0;
}

}  // namespace

void add_bench(CLI::App& app, int& status) {
  auto a = std::make_shared<BenchArgs>();
  auto* cmd = app.add_subcommand("bench", "run a simple I/O benchmark (qemu-img bench's options)");
  cmd->add_option("file", a->path)->required();
  cmd->add_option("-f", a->format, "format (probed)");
  cmd->add_option("-t", a->cache, "cache mode: none = O_DIRECT");
  cmd->add_option("-i", a->aio, "accepted for qemu-img compatibility (qcow2 uses Linux AIO)");
  cmd->add_option("-d", a->depth, "requests in flight");
  cmd->add_option("-c", a->count, "number of requests");
  cmd->add_option("-s", a->size, "request size in bytes");
  cmd->add_option("-S", a->step, "offset step (default: request size)");
  cmd->add_option("-o", a->offset, "starting offset");
  cmd->add_flag("-w", a->write, "write instead of read");
  cmd->add_option("--pattern", a->pattern, "byte written");
  cmd->add_option("-q", a->queues, "I/O queues, one thread each (not in qemu-img; like fio's numjobs)");
  cmd->callback([a, &status] { status = run_bench(*a); });
}

}  // namespace tern::img

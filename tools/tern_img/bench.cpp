// tern-img bench: qemu-img bench's workload through Tern's disk interface
// (open_disk + one IoContext), so both programs run the same requests:
//   tern-img bench [-f fmt] [-t none|writeback] [-i native] -d DEPTH -c COUNT
//                  -s SIZE [-S STEP] [-o OFFSET] [-w] [--pattern N] FILE
// Sequential requests from OFFSET stepping by STEP (default SIZE), wrapping
// at the end of the disk, DEPTH in flight. Prints the time like qemu-img.
#include <poll.h>
#include <stdlib.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <vector>

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
};

int run_bench(BenchArgs a) {
  auto& [path, format, cache, aio, depth, count, size, step, offset, write, pattern] = a;
  if (step == 0) step = size;

  tern::block::OpenOptions o;
  o.path = path;
  o.type = format == "qcow2" ? tern::block::ImageType::Qcow2
           : format == "raw" ? tern::block::ImageType::Raw
                             : tern::block::ImageType::Auto;
  o.direct = cache == "none";
  o.read_only = !write;
  o.allow_backing = true;  // tern-img follows backing files, as qemu-img does
  auto disk = tern::block::open_disk(o);
  if (!disk) {
    std::fprintf(stderr, "tern-img: bench: %s\n", disk.error().message().c_str());
    return 1;
  }
  auto ctx = (*disk)->make_io_context(depth);
  if (!ctx) {
    std::fprintf(stderr, "tern-img: bench: %s\n", ctx.error().message().c_str());
    return 1;
  }
  const uint64_t disk_size = (*disk)->size();
  std::vector<uint8_t*> buffers(depth);
  std::vector<iovec> iovs(depth);
  for (uint32_t i = 0; i < depth; ++i) {
    void* p = nullptr;
    if (posix_memalign(&p, 4096, size) != 0) return 1;
    std::memset(p, pattern, size);
    buffers[i] = static_cast<uint8_t*>(p);
    iovs[i] = iovec{p, size};
  }
  std::printf("Sending %lu %s requests, %lu bytes each, %u in parallel (starting at offset %lu, step size %lu)\n",
              count, write ? "write" : "read", size, depth, offset, step);
  auto start = std::chrono::steady_clock::now();
  uint64_t submitted = 0, completed = 0, next = offset;
  std::vector<uint32_t> free_slots;
  for (uint32_t i = 0; i < depth; ++i) free_slots.push_back(depth - 1 - i);
  std::vector<tern::block::Completion> done;
  while (completed < count) {
    while (submitted < count && !free_slots.empty()) {
      uint32_t slot = free_slots.back();
      free_slots.pop_back();
      if (next + size > disk_size) next = 0;
      tern::block::Request r;
      r.op = write ? tern::block::Op::Write : tern::block::Op::Read;
      r.offset = next;
      r.iov = std::span<const iovec>(&iovs[slot], 1);
      r.cookie = slot;
      if (auto s = (*ctx)->submit(r); !s) {
        std::fprintf(stderr, "tern-img: bench: submit: %s\n", s.error().message().c_str());
        return 1;
      }
      ++submitted;
      next += step;
    }
    done.clear();
    (*ctx)->drain(done);
    if (done.empty()) {
      pollfd pfd{(*ctx)->completion_fd(), POLLIN, 0};
      ::poll(&pfd, 1, -1);
      continue;
    }
    for (auto& c : done) {
      if (!c.status) {
        std::fprintf(stderr, "tern-img: bench: request failed: %s\n", c.status.error().message().c_str());
        return 1;
      }
      free_slots.push_back(static_cast<uint32_t>(c.cookie));
      ++completed;
    }
  }
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ctx->reset();
  if (auto r = (*disk)->close(); !r) {
    std::fprintf(stderr, "tern-img: bench: close: %s\n", r.error().message().c_str());
    return 1;
  }
  std::printf("Run completed in %.3f seconds.\n", seconds);
  for (auto* b : buffers) free(b);
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
  cmd->callback([a, &status] { status = run_bench(*a); });
}

}  // namespace tern::img

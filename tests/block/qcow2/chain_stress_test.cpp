// Seeded churn from two queues on two threads over a backing chain: a QCOW2
// overlay on a raw or a QCOW2 backing file (odd seeds raw, even seeds
// QCOW2, sometimes compressed, sometimes shorter than the overlay). Each
// queue owns its own stripes and writes (partial: copy-on-write from the
// backing file), discards (the zero flag hides the backing file),
// write-zeroes, reads them back, and leaves a write in flight to a cluster
// as it is discarded (the freed-cluster rule). Both queues also read a
// tail nobody writes, so lookups and backing reads of the two queues run
// side by side (docs/qcow2.md, "Concurrency"), and both try live resizes,
// which tern refuses for an image with a backing file (docs/qcow2.md,
// "Tools"): refused under load,
// size unchanged. At the end: Tern's reads equal the mirror, `qemu-img
// check` is clean, `qemu-img convert -O raw` equals the mirror, and the
// backing file is unchanged.
//
// ctest runs a few seeds. More by hand:
//   TERN_STRESS_SEEDS=1-100 build/tests/qcow2_chain_stress_test
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <random>
#include <thread>

#include "tests/block/qcow2/qcow2_test_util.h"

namespace tern::block::qcow2::test {
namespace {

constexpr uint32_t kQueues = 2;

struct Config {
  bool qcow2_base;
  bool compressed_base;
  uint32_t base_cluster_bits;
  uint32_t cluster_bits;  // the overlay's
  uint64_t stripe_bytes;  // two overlay clusters
  uint64_t stripes;       // written, owned by the queues in turn
  uint64_t tail_stripes;  // read by both, written by neither
  uint64_t base_bytes;    // the backing file's size (the overlay's or less)
  bool direct;
  uint32_t rounds;
};

Config config_for(uint32_t seed) {
  std::mt19937_64 rng(seed);
  Config c{};
  c.qcow2_base = seed % 2 == 0;
  c.compressed_base = c.qcow2_base && rng() % 2 == 0;
  c.base_cluster_bits = rng() % 2 ? 12 : 16;
  const uint32_t bits[] = {9, 12, 16};
  c.cluster_bits = bits[rng() % 3];
  c.stripe_bytes = uint64_t{2} << c.cluster_bits;
  c.stripes = c.cluster_bits == 9 ? 512 : 64;
  c.tail_stripes = 16;
  const uint64_t size = (c.stripes + c.tail_stripes) * c.stripe_bytes;
  // Sometimes the backing file ends early (64 KiB aligned, as a QCOW2
  // base is rounded by nothing but its clusters): past it the overlay
  // reads zeros.
  c.base_bytes = rng() % 3 == 0 ? (size * 3 / 4) & ~uint64_t{0xffff} : size;
  c.direct = rng() % 2 == 0;
  c.rounds = 10;
  return c;
}

// Distinct contents for (tag, offset).
void pattern(std::span<uint8_t> out, uint64_t tag, uint64_t offset) {
  for (size_t i = 0; i < out.size(); i += 8) {
    uint64_t word = (tag << 40) ^ ((offset + i) / 512) ^ 0x5a5a;
    std::memcpy(out.data() + i, &word, std::min<size_t>(8, out.size() - i));
  }
}

// Submits every request, then waits on the completion eventfd until all
// are back; returns the first failure.
std::string run_batch(IoContext& ctx, std::vector<Request>& reqs) {
  for (auto& r : reqs) {
    if (auto s = ctx.submit(r); !s) return "submit: " + s.error().message();
  }
  std::vector<Completion> out;
  if (auto w = io::collect(ctx, reqs.size(), out); !w) return "wait: " + w.error().message();
  for (auto& c : out) {
    if (!c.status) return "request " + std::to_string(c.cookie) + ": " + c.status.error().message();
  }
  return {};
}

struct Queued {
  Request req;
  std::unique_ptr<AlignedBuffer> buf;
  iovec iov{};
  bool check_read = false;
};

// One queue's churn; returns the first problem, empty when none. The
// mirror's bytes in this queue's stripes are touched only by this thread;
// the tail only read.
std::string worker(DiskFile& disk, const Config& cfg, std::vector<uint8_t>& mirror, uint32_t id,
                   uint32_t seed) {
  std::mt19937_64 rng(seed * 1000003ull + id);
  auto ctx = disk.make_io_context(32);
  if (!ctx) return "io context: " + ctx.error().message();
  const uint64_t cs = uint64_t{1} << cfg.cluster_bits;
  const uint64_t size = disk.size();
  std::vector<uint64_t> mine;
  for (uint64_t st = id; st < cfg.stripes; st += kQueues) mine.push_back(st);
  uint64_t cookie = 0;
  for (uint32_t round = 0; round < cfg.rounds; ++round) {
    if (rng() % 2 == 0) {
      // A live resize while the other queue's batch runs: refused for an
      // image with a backing file, and nothing changes.
      auto r = disk.resize(size + (1 << 20));
      if (r) return "a resize of an image with a backing file was accepted";
      if (r.error().code != Errc::Unsupported) return "resize: " + r.error().message();
      if (disk.size() != size) return "a refused resize changed the size";
    }
    std::vector<uint64_t> order = mine;
    std::shuffle(order.begin(), order.end(), rng);
    size_t n = std::min<size_t>(order.size(), 6 + rng() % 14);
    std::vector<Queued> ops;
    ops.reserve(2 * n + 8);
    auto add = [&](Request r, std::unique_ptr<AlignedBuffer> buf, bool check) {
      Queued& op = ops.emplace_back();
      op.req = r;
      op.req.cookie = ++cookie;
      op.buf = std::move(buf);
      op.check_read = check;
      if (op.buf) op.iov = iovec{op.buf->data(), op.buf->size()};
    };
    for (size_t k = 0; k < n; ++k) {
      const uint64_t base = order[k] * cfg.stripe_bytes;
      const uint32_t kind = static_cast<uint32_t>(rng() % 10);
      Request r;
      if (kind < 4) {  // a sector-aligned write inside the stripe: copy-on-write from the backing file
        uint64_t sectors = cfg.stripe_bytes / 512;
        uint64_t first = rng() % sectors;
        uint64_t count = 1 + rng() % (sectors - first);
        r.op = Op::Write;
        r.offset = base + first * 512;
        auto buf = std::make_unique<AlignedBuffer>(count * 512);
        pattern(buf->span(), (uint64_t{seed} << 16) ^ (round << 8) ^ cookie ^ (uint64_t{id} << 30), r.offset);
        std::copy_n(buf->data(), buf->size(), mirror.begin() + static_cast<ptrdiff_t>(r.offset));
        add(r, std::move(buf), false);
      } else if (kind < 5) {  // discard whole clusters: v3 with a backing file, they read as zeros
        r.op = Op::Discard;
        r.offset = base + (rng() % 2) * cs;
        r.length = (r.offset == base ? 1 + rng() % 2 : 1) * cs;
        std::fill_n(mirror.begin() + static_cast<ptrdiff_t>(r.offset), r.length, 0);
        add(r, nullptr, false);
      } else if (kind < 6) {  // write-zeroes, any sector range
        uint64_t sectors = cfg.stripe_bytes / 512;
        uint64_t first = rng() % sectors;
        r.op = Op::WriteZeroes;
        r.offset = base + first * 512;
        r.length = (1 + rng() % (sectors - first)) * 512;
        r.may_unmap = rng() % 2 == 0;
        std::fill_n(mirror.begin() + static_cast<ptrdiff_t>(r.offset), r.length, 0);
        add(r, nullptr, false);
      } else if (kind < 9) {  // read the stripe back, checked after the batch
        r.op = Op::Read;
        r.offset = base;
        add(r, std::make_unique<AlignedBuffer>(cfg.stripe_bytes), true);
      } else {  // a full-cluster write still in flight as the cluster is discarded
        r.op = Op::Write;
        r.offset = base;
        auto buf = std::make_unique<AlignedBuffer>(cs);
        pattern(buf->span(), 0xfeed, r.offset);
        add(r, std::move(buf), false);
        Request d;
        d.op = Op::Discard;
        d.offset = base;
        d.length = cs;
        std::fill_n(mirror.begin() + static_cast<ptrdiff_t>(base), cs, 0);
        add(d, nullptr, false);
      }
    }
    // Reads of the tail, which the other queue reads too: backing reads
    // and lookups in parallel.
    for (uint32_t k = 0; k < 4; ++k) {
      Request r;
      r.op = Op::Read;
      r.offset = (cfg.stripes + rng() % cfg.tail_stripes) * cfg.stripe_bytes;
      add(r, std::make_unique<AlignedBuffer>(cfg.stripe_bytes), true);
    }
    if (rng() % 4 == 0) {
      Request f;
      f.op = Op::Flush;
      add(f, nullptr, false);
    }
    std::vector<Request> reqs;
    for (auto& op : ops) {
      if (op.buf) op.req.iov = std::span<const iovec>(&op.iov, 1);
      reqs.push_back(op.req);
    }
    if (auto failure = run_batch(**ctx, reqs); !failure.empty()) {
      return "round " + std::to_string(round) + ": " + failure;
    }
    for (auto& op : ops) {
      if (!op.check_read) continue;
      const uint8_t* want = mirror.data() + op.req.offset;
      if (std::memcmp(op.buf->data(), want, op.buf->size()) != 0) {
        size_t i = 0;
        while (op.buf->data()[i] == want[i]) ++i;
        return "round " + std::to_string(round) + ": read at " + std::to_string(op.req.offset) +
               " differs from the mirror at byte " + std::to_string(i);
      }
    }
  }
  return {};
}

void write_file(const std::string& path, std::span<const uint8_t> data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size()));
}

void run_seed(uint32_t seed, const TempDir& dir) {
  const Config cfg = config_for(seed);
  SCOPED_TRACE("seed " + std::to_string(seed) + ": backing " +
               (cfg.qcow2_base ? std::string(cfg.compressed_base ? "compressed qcow2" : "qcow2") +
                                     " cluster_bits " + std::to_string(cfg.base_cluster_bits)
                               : std::string("raw")) +
               ", base " + std::to_string(cfg.base_bytes) + " bytes, overlay cluster_bits " +
               std::to_string(cfg.cluster_bits) + ", direct " + (cfg.direct ? "on" : "off"));
  const uint64_t size = (cfg.stripes + cfg.tail_stripes) * cfg.stripe_bytes;
  // The backing file's contents, and the mirror of what the overlay reads.
  std::vector<uint8_t> base_data(cfg.base_bytes);
  for (uint64_t off = 0; off < base_data.size(); off += 4096) {
    pattern(std::span<uint8_t>(base_data).subspan(off, std::min<uint64_t>(4096, base_data.size() - off)),
            seed, off);
  }
  std::vector<uint8_t> mirror(size, 0);
  std::copy(base_data.begin(), base_data.end(), mirror.begin());

  const std::string base_raw = dir.file("base.raw");
  const std::string base = cfg.qcow2_base ? dir.file("base.qcow2") : base_raw;
  const std::string top = dir.file("top.qcow2");
  SH_OK("rm -f '" + base + "' '" + top + "'");
  write_file(base_raw, base_data);
  if (cfg.qcow2_base) {
    SH_OK(std::string("qemu-img convert ") + (cfg.compressed_base ? "-c " : "") + "-O qcow2 -o cluster_size=" +
          std::to_string(uint64_t{1} << cfg.base_cluster_bits) + " '" + base_raw + "' '" + base + "'");
  }
  SH_OK("qemu-img create -q -f qcow2 -o cluster_size=" + std::to_string(uint64_t{1} << cfg.cluster_bits) +
        " -b '" + base + "' -F " + (cfg.qcow2_base ? "qcow2" : "raw") + " '" + top + "' " + std::to_string(size));
  {
    auto disk = open_image(top, false, true, cfg.direct);
    ASSERT_NE(disk, nullptr);
    std::vector<std::string> failures(kQueues);
    {
      std::vector<std::jthread> threads;
      for (uint32_t q = 0; q < kQueues; ++q) {
        threads.emplace_back([&, q] { failures[q] = worker(*disk, cfg, mirror, q, seed); });
      }
    }
    for (uint32_t q = 0; q < kQueues; ++q) ASSERT_EQ(failures[q], "") << "queue " << q;
    auto got = read_whole(*disk);
    ASSERT_EQ(got.size(), size);
    ASSERT_TRUE(got == mirror) << "Tern's reads differ from the mirror";
    ASSERT_TRUE(disk->close().has_value());
  }
  std::string out;
  ASSERT_EQ(sh("qemu-img check '" + top + "'", &out), 0) << out;
  const std::string back = dir.file("back.raw");
  SH_OK("qemu-img convert -O raw '" + top + "' '" + back + "'");
  ASSERT_TRUE(slurp(back) == mirror) << "qemu-img reads differ from the mirror";
  // The backing file is read, never written.
  SH_OK("qemu-img convert -O raw '" + base + "' '" + back + "'");
  ASSERT_TRUE(slurp(back) == base_data) << "the backing file changed";
}

TEST(Qcow2ChainStress, TwoQueuesOverBackingChainMatchMirrorAndCheckClean) {
  TempDir dir;
  for (uint32_t seed : seeds_from_env("1-6")) {
    run_seed(seed, dir);
    if (HasFatalFailure() || HasFailure()) {
      ADD_FAILURE() << "first failing seed: " << seed;
      return;
    }
  }
}

}  // namespace
}  // namespace tern::block::qcow2::test

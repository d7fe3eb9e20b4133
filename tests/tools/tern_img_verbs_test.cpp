// tern-img's qemu-img verbs (map, compare, commit, rebase, convert -c/-B,
// measure) run side by side with qemu-img on the same images: the same
// output (modulo the program name in error messages) and exit status, or
// results that qemu-img compare calls identical and qemu-img check clean.
#include <gtest/gtest.h>

#include <cstdlib>
#include <sstream>

#include "block/chain.h"
#include "block/qcow2/engine.h"
#include "block/qcow2/qcow2_disk.h"
#include "tests/block/qcow2/qcow2_test_util.h"

namespace tern::block::qcow2::test {
namespace {

struct Outcome {
  int status;
  std::string output;
};

// `text` with "PREFIX: " dropped where a line starts with it. (No
// std::regex: GCC 12's -Wmaybe-uninitialized trips on it under ASan.)
std::string drop_line_prefix(const std::string& text, const std::string& prefix) {
  std::istringstream lines(text);
  std::string line, out;
  while (std::getline(lines, line)) {
    if (line.starts_with(prefix)) line = line.substr(prefix.size());
    out += line + "\n";
  }
  if (!text.empty() && !text.ends_with('\n')) out.pop_back();
  return out;
}

// The line of `text` that contains `key`, or "".
std::string line_with(const std::string& text, const std::string& key) {
  auto at = text.find(key);
  if (at == std::string::npos) return {};
  auto start = text.rfind('\n', at);
  start = start == std::string::npos ? 0 : start + 1;
  return text.substr(start, text.find('\n', at) - start);
}

// Runs `args` under both programs in `dir`, one after the other (image
// locks), with "qemu-img: " / "tern-img: " message prefixes dropped.
std::pair<Outcome, Outcome> both(const TempDir& dir, const std::string& args) {
  auto run = [&](const std::string& program, const std::string& prefix) {
    Outcome o;
    o.status = sh("cd '" + dir.file("") + "' && " + program + " " + args, &o.output);
    o.output = drop_line_prefix(o.output, prefix + ": ");
    return o;
  };
  return {run("qemu-img", "qemu-img"), run(tern_img(), "tern-img")};
}

#define EXPECT_SAME(dir, args)                                                     \
  do {                                                                             \
    auto [q_, t_] = both(dir, args);                                               \
    EXPECT_EQ(t_.status, q_.status) << (args) << "\nqemu-img:\n" << q_.output      \
                                    << "tern-img:\n" << t_.output;                 \
    EXPECT_EQ(t_.output, q_.output) << (args);                                     \
  } while (0)

// Errors: the same status, and a message; the wording is tern's own.
#define EXPECT_SAME_FAILURE(dir, args)                                             \
  do {                                                                             \
    auto [q_, t_] = both(dir, args);                                               \
    EXPECT_NE(q_.status, 0) << (args);                                             \
    EXPECT_EQ(t_.status, q_.status) << (args) << "\nqemu-img:\n" << q_.output      \
                                    << "tern-img:\n" << t_.output;                 \
    EXPECT_NE(t_.output.find("Could not open"), std::string::npos) << t_.output;   \
  } while (0)

// A three-layer chain: raw base (4M), qcow2 middle (data, a zero cluster),
// qcow2 top (6M: past the middle's end), plus a compressed copy.
void make_chain(const TempDir& dir) {
  const std::string d = "cd '" + dir.file("") + "' && ";
  SH_OK(d + "qemu-img create -q -f raw base.raw 4M");
  SH_OK(d + "qemu-io -f raw -c 'write -P 1 0 128k' -c 'write -P 6 2M 64k' base.raw");
  SH_OK(d + "qemu-img create -q -f qcow2 -b base.raw -F raw mid.qcow2");
  SH_OK(d + "qemu-io -c 'write -P 2 64k 64k' -c 'write -z 256k 64k' -c 'write -P 3 1M 128k' "
            "-c 'write -z 2M 4k' mid.qcow2");
  SH_OK(d + "qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 top.qcow2 6M");
  SH_OK(d + "qemu-io -c 'write -P 4 1088k 64k' -c 'write -P 5 5M 64k' -c 'write -P 5 5500k 1k' top.qcow2");
  SH_OK(d + "qemu-img convert -c -O qcow2 mid.qcow2 compressed.qcow2");
}

TEST(TernImgVerbs, MapMatchesQemuImg) {
  TempDir dir;
  make_chain(dir);
  for (const char* image : {"top.qcow2", "mid.qcow2", "base.raw", "compressed.qcow2"}) {
    for (const char* output : {"json", "human"}) {
      EXPECT_SAME(dir, std::string("map --output ") + output + " " + image);
    }
  }
  EXPECT_SAME(dir, "map -f raw mid.qcow2");
  EXPECT_SAME_FAILURE(dir, "map nonexistent.qcow2");
}

TEST(TernImgVerbs, CompareMatchesQemuImg) {
  TempDir dir;
  make_chain(dir);
  const std::string d = "cd '" + dir.file("") + "' && ";
  SH_OK(d + "qemu-img convert -O qcow2 top.qcow2 flat.qcow2");
  SH_OK(d + "qemu-img convert -O raw top.qcow2 flat.raw");
  SH_OK(d + "cp flat.raw changed.raw && qemu-io -f raw -c 'write -P 7 1000000 1' changed.raw");
  SH_OK(d + "qemu-img create -q -f qcow2 longer.qcow2 8M && qemu-img convert -n -O qcow2 top.qcow2 longer.qcow2");
  SH_OK(d + "cp longer.qcow2 tail.qcow2 && qemu-io -c 'write -P 9 7M 4k' tail.qcow2");
  const char* cases[] = {
      "top.qcow2 flat.qcow2",       "top.qcow2 flat.raw",     "flat.raw changed.raw",
      "top.qcow2 changed.raw",      "-q flat.raw changed.raw", "-s top.qcow2 flat.qcow2",
      "-s flat.qcow2 flat.qcow2",   "flat.qcow2 longer.qcow2", "-s flat.qcow2 longer.qcow2",
      "longer.qcow2 top.qcow2",     "top.qcow2 tail.qcow2",    "tail.qcow2 flat.raw",
      "-f raw top.qcow2 flat.raw",  "-F raw flat.qcow2 flat.raw", "compressed.qcow2 mid.qcow2",
      "-s compressed.qcow2 mid.qcow2",
  };
  for (const char* c : cases) EXPECT_SAME(dir, std::string("compare ") + c);
  EXPECT_SAME_FAILURE(dir, "compare top.qcow2 nonexistent");
  EXPECT_SAME_FAILURE(dir, "compare nonexistent top.qcow2");
}

// convert -c: QEMU reads the compressed clusters back byte for byte and
// qemu-img check finds the refcounts (shared host clusters, compressed
// clusters spanning two of them) clean; incompressible clusters are
// written uncompressed, as qemu-img does.
// "Image end offset: N" from qemu-img check's output; 0 when missing.
uint64_t image_end_offset(const std::string& check_output) {
  const std::string key = "Image end offset: ";
  auto at = check_output.find(key);
  return at == std::string::npos ? 0 : std::stoull(check_output.substr(at + key.size()));
}

TEST(TernImgVerbs, ConvertCompressedReadBackByQemu) {
  TempDir dir;
  make_chain(dir);
  const std::string d = "cd '" + dir.file("") + "' && ";
  // 192 KiB of random data (incompressible) among patterns and zeros.
  SH_OK(d + "qemu-img convert -O raw top.qcow2 src.raw && head -c 196608 /dev/urandom | "
            "dd of=src.raw bs=64k seek=40 conv=notrunc status=none");
  struct Case {
    const char* options;
    bool random_only_uncompressed;
  };
  for (const char* type : {"zlib", "zstd"}) {
    for (const char* extra : {"", ",cluster_size=4096", ",cluster_size=512", ",cluster_size=4096,refcount_bits=1"}) {
      SCOPED_TRACE(std::string(type) + extra);
      SH_OK(d + "rm -f c.qcow2 c.raw && " + tern_img() + " convert -c -O qcow2 -o compression_type=" + type +
            extra + " src.raw c.qcow2");
      SH_OK(d + "qemu-img check -q c.qcow2");
      SH_OK(d + "qemu-img convert -O raw c.qcow2 c.raw && cmp src.raw c.raw");
      std::string out;
      ASSERT_EQ(sh(d + "qemu-img info c.qcow2 && qemu-img check c.qcow2", &out), 0) << out;
      EXPECT_NE(out.find(std::string("compression type: ") + type), std::string::npos) << out;
      EXPECT_NE(out.find("compressed clusters"), std::string::npos) << out;
      // The random clusters are not compressed: data with an offset.
      ASSERT_EQ(sh(d + "qemu-img map --output json c.qcow2", &out), 0) << out;
      // (Small clusters: L2 tables come between them, so several extents.)
      std::string line = line_with(out, "\"start\": 2621440, ");
      EXPECT_NE(line.find("\"depth\": 0, \"present\": true, \"zero\": false, \"data\": true, \"offset\""),
                std::string::npos)
          << out;
      // Compressed clusters share host clusters: the image is about as
      // small as qemu-img's from the same source (one host cluster per
      // compressed cluster made it larger than the raw file).
      SH_OK(d + "rm -f q.qcow2 && qemu-img convert -c -O qcow2 -o compression_type=" + type + extra +
            " src.raw q.qcow2");
      std::string tern_check, qemu_check;
      ASSERT_EQ(sh(d + "qemu-img check c.qcow2", &tern_check), 0) << tern_check;
      ASSERT_EQ(sh(d + "qemu-img check q.qcow2", &qemu_check), 0) << qemu_check;
      const uint64_t tern_end = image_end_offset(tern_check);
      const uint64_t qemu_end = image_end_offset(qemu_check);
      EXPECT_LE(tern_end, qemu_end + qemu_end / 4 + 65536) << tern_check << qemu_check;
    }
  }
  // From a chain, into a compressed overlay of its base and into a plain
  // overlay of its middle: only differing clusters are written.
  SH_OK(d + tern_img() + " convert -c -O qcow2 -B base.raw -F raw top.qcow2 over-base.qcow2");
  SH_OK(d + tern_img() + " convert -O qcow2 -B mid.qcow2 -F qcow2 top.qcow2 over-mid.qcow2");
  for (const char* image : {"over-base.qcow2", "over-mid.qcow2"}) {
    SH_OK(d + "qemu-img check -q " + image);
    SH_OK(d + "qemu-img compare -q top.qcow2 " + image);
  }
  std::string map;
  ASSERT_EQ(sh(d + "qemu-img map --output json over-mid.qcow2", &map), 0);
  std::string top_map;
  ASSERT_EQ(sh(d + "qemu-img map --output json top.qcow2", &top_map), 0);
  EXPECT_EQ(map, top_map);  // same allocation: the top's own clusters only
}

// The same chain made twice, in q/ for qemu-img and t/ for tern-img.
struct TwoChains {
  TempDir dir;
  std::string q = dir.file("q");
  std::string t = dir.file("t");
  TwoChains() { EXPECT_EQ(sh("mkdir '" + q + "' '" + t + "'").status, 0); }
  void make(const std::string& top_size = "4M") {
    for (const std::string& d : {q, t}) {
      const std::string cd = "cd '" + d + "' && ";
      SH_OK(cd + "rm -f *.qcow2 *.raw && qemu-img create -q -f raw base.raw 4M");
      SH_OK(cd + "qemu-io -f raw -c 'write -P 1 0 128k' -c 'write -P 6 2M 64k' base.raw");
      SH_OK(cd + "qemu-img create -q -f qcow2 -b base.raw -F raw mid.qcow2");
      SH_OK(cd + "qemu-io -c 'write -P 2 64k 64k' -c 'write -z 256k 64k' -c 'write -P 3 1M 128k' "
                 "-c 'write -z 2M 4k' mid.qcow2");
      SH_OK(cd + "qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 top.qcow2 " + top_size);
      SH_OK(cd + "qemu-io -c 'write -P 4 1088k 64k' -c 'write -P 5 3M 64k' -c 'write -P 5 3500k 1k' "
                 "-c 'write -z 0 4k' top.qcow2");
    }
  }
  // Both programs run `args` in their own directory; exit statuses equal.
  void run(const std::string& args) {
    std::string qo, to;
    int qs = sh("cd '" + q + "' && qemu-img " + args, &qo);
    int ts = sh("cd '" + t + "' && " + tern_img() + " " + args, &to);
    EXPECT_EQ(ts, qs) << args << "\nqemu-img: " << qo << "\ntern-img: " << to;
  }
  // Every image the same per qemu-img compare, and tern's check clean.
  void expect_same(std::initializer_list<const char*> images) {
    for (const char* image : images) {
      SH_OK("qemu-img compare '" + q + "/" + image + "' '" + t + "/" + image + "'");
      if (std::string(image).ends_with(".qcow2")) SH_OK("qemu-img check -q '" + t + "/" + image + "'");
    }
  }
  std::string info(const std::string& d, const std::string& image) {
    std::string out;
    EXPECT_EQ(sh("cd '" + d + "' && qemu-img info --output json " + image + " | grep -v -e actual-size -e "
                 "'\"filename\"' -e full-backing -e dirty",
                 &out),
              0);
    return out;
  }
};

TEST(TernImgVerbs, CommitMatchesQemuImg) {
  TwoChains c;
  c.make();
  SH_OK("cd '" + c.t + "' && qemu-img convert -O raw top.qcow2 ../want.raw");
  c.run("commit top.qcow2");
  c.expect_same({"top.qcow2", "mid.qcow2", "base.raw"});
  SH_OK("qemu-img compare '" + c.t + "/top.qcow2' '" + c.dir.file("want.raw") + "'");
  // Emptied: nothing allocated in the overlay, as qemu-img leaves it.
  std::string qm, tm;
  ASSERT_EQ(sh("cd '" + c.q + "' && qemu-img map --output json top.qcow2", &qm), 0);
  ASSERT_EQ(sh("cd '" + c.t + "' && qemu-img map --output json top.qcow2", &tm), 0);
  // (Host offsets in the middle image differ: allocation order.)
  EXPECT_EQ(qm.find("\"depth\": 0, \"present\": true"), std::string::npos) << qm;
  EXPECT_EQ(tm.find("\"depth\": 0, \"present\": true"), std::string::npos) << tm;
  EXPECT_EQ(c.info(c.t, "top.qcow2"), c.info(c.q, "top.qcow2"));
  // Twice more down the chain: into the raw base; -d keeps the overlay.
  c.make();
  c.run("commit -d top.qcow2");
  c.run("commit mid.qcow2");
  c.expect_same({"top.qcow2", "mid.qcow2", "base.raw"});
  // Without a backing file: an error for both.
  c.run("commit base.raw");
}

TEST(TernImgVerbs, RebaseMatchesQemuImg) {
  TwoChains c;
  c.make();
  c.run("rebase -b base.raw -F raw top.qcow2");  // safe: skips the middle
  c.expect_same({"top.qcow2", "mid.qcow2", "base.raw"});
  EXPECT_EQ(c.info(c.t, "top.qcow2"), c.info(c.q, "top.qcow2"));
  c.make();
  c.run("rebase -b '' top.qcow2");  // flatten
  c.expect_same({"top.qcow2"});
  EXPECT_EQ(c.info(c.t, "top.qcow2"), c.info(c.q, "top.qcow2"));
  c.make();
  c.run("rebase -u -b base.raw -F raw top.qcow2");  // header only: contents change alike
  c.expect_same({"top.qcow2"});
  EXPECT_EQ(c.info(c.t, "top.qcow2"), c.info(c.q, "top.qcow2"));
  c.make();
  c.run("rebase -u -b missing.qcow2 -F qcow2 top.qcow2");
  EXPECT_EQ(c.info(c.t, "top.qcow2"), c.info(c.q, "top.qcow2"));

  // A loop back to the image, refused (qemu-img refuses too); unchanged.
  c.make();
  std::string before = c.info(c.t, "mid.qcow2"), out;
  EXPECT_EQ(sh("cd '" + c.t + "' && " + tern_img() + " rebase -b top.qcow2 -F qcow2 mid.qcow2", &out), 1);
  EXPECT_NE(out.find("loop"), std::string::npos) << out;
  EXPECT_EQ(sh("cd '" + c.t + "' && " + tern_img() + " rebase -u -b top.qcow2 -F qcow2 mid.qcow2", &out), 1);
  EXPECT_EQ(c.info(c.t, "mid.qcow2"), before);
  EXPECT_NE(sh("cd '" + c.q + "' && qemu-img rebase -b top.qcow2 -F qcow2 mid.qcow2", &out), 0);
  // Too deep: 16 overlays under the new backing file are already the most.
  std::string chain = "cd '" + c.t + "' && qemu-img create -q -f qcow2 d0.qcow2 1M";
  for (int i = 1; i <= 16; ++i) {
    chain += " && qemu-img create -q -f qcow2 -b d" + std::to_string(i - 1) + ".qcow2 -F qcow2 d" +
             std::to_string(i) + ".qcow2";
  }
  SH_OK(chain + " && qemu-img create -q -f qcow2 img.qcow2 1M");
  EXPECT_EQ(sh("cd '" + c.t + "' && " + tern_img() + " rebase -b d16.qcow2 -F qcow2 img.qcow2", &out), 1);
  EXPECT_NE(out.find("too deep"), std::string::npos) << out;
  SH_OK("cd '" + c.t + "' && " + tern_img() + " rebase -b d15.qcow2 -F qcow2 img.qcow2");
}

TEST(TernImgVerbs, MeasureMatchesQemuImg) {
  TempDir dir;
  make_chain(dir);
  SH_OK("cd '" + dir.file("") + "' && head -c 1000000 /dev/urandom > odd.raw");
  const char* cases[] = {
      "--size 1G",
      "-O qcow2 --size 1G",
      "-O qcow2 -o cluster_size=4096 --size 10G --output json",
      "-O qcow2 --size 1000",
      "-O qcow2 -o refcount_bits=1 --size 1T",
      "-O qcow2 -o cluster_size=512 --size 100G",
      "-O qcow2 -o cluster_size=2M,refcount_bits=64 --size 3T",
      "-O qcow2 -o backing_file=x --size 1G",
      "-O qcow2 top.qcow2",
      "-O qcow2 --output json top.qcow2",
      "-O qcow2 base.raw",
      "-O qcow2 -o cluster_size=4096 odd.raw",
      "-O qcow2 -o cluster_size=2M compressed.qcow2",
      "-O qcow2 -o compat=0.10 compressed.qcow2",
      "-O qcow2 -o backing_file=base.raw top.qcow2",
      "-O qcow2 -o preallocation=full top.qcow2",
      "top.qcow2",
      "-O qcow2 --size 1G top.qcow2",                // usage errors, status 1
      "-O qcow2",
      "-O qcow2 -o cluster_size=512 --size 9T",      // L1 too large
  };
  for (const char* c : cases) EXPECT_SAME(dir, std::string("measure ") + c);
}

// A raw file whose size is not a multiple of 512: qemu's raw format rounds
// its virtual size up to 512, the bytes past the file's end reading as
// zeros. Before, tern-img convert -O qcow2 of it failed ("the backing file
// sets another size": the new image's size is rounded up, the input's was
// not) and left the new image behind.
TEST(TernImgVerbs, OddSizedRawAsQemuImg) {
  TempDir dir;
  const std::string d = "cd '" + dir.file("") + "' && ";
  SH_OK(d + "head -c 1000 /dev/urandom > small.raw && head -c 1000000 /dev/urandom > odd.raw");
  for (const char* input : {"small.raw", "odd.raw"}) {
    for (const char* format : {"raw", "qcow2"}) {
      SCOPED_TRACE(std::string(input) + " -> " + format);
      const std::string out = std::string("t.") + format;
      std::string text;
      EXPECT_EQ(sh(d + "rm -f " + out + " && " + tern_img() + " convert -O " + format + " " + input + " " + out,
                   &text),
                0)
          << text;
      SH_OK(d + "rm -f q." + format + " && qemu-img convert -O " + format + " " + input + " q." + format);
      SH_OK(d + "qemu-img compare " + input + " " + out);
      std::string q_info, t_info;
      ASSERT_EQ(sh(d + "qemu-img info q." + format, &q_info), 0);
      ASSERT_EQ(sh(d + "qemu-img info " + out, &t_info), 0);
      EXPECT_EQ(line_with(t_info, "virtual size"), line_with(q_info, "virtual size"));
      EXPECT_SAME(dir, "compare " + out + " " + input);
    }
    EXPECT_SAME(dir, std::string("map --output json ") + input);
    EXPECT_SAME(dir, std::string("map ") + input);
    EXPECT_SAME(dir, std::string("measure ") + input);
  }
}

// Before, map, compare, measure and rebase asked the chain one cluster at a
// time, so their cost followed the virtual size (an empty 1 TiB image:
// 16 Mi lookups). The status of a QCOW2 layer now comes from a walk of its
// tables: an unallocated L1 entry answers for its whole L2 range, and
// clusters of one kind (data at consecutive host offsets) form one extent.
TEST(TernImgVerbs, ChainStatusWalksTheTablesNotTheClusters) {
  TempDir dir;
  const std::string d = "cd '" + dir.file("") + "' && ";
  // 64 KiB clusters: one L2 table maps 512 MiB.
  SH_OK(d + "qemu-img create -q -f qcow2 big.qcow2 1T");
  SH_OK(d + "qemu-io -c 'write -P 1 0 128k' -c 'write -P 2 512M 64k' -c 'write -z 600M 64k' "
            "-c 'write -P 3 1023G 64k' big.qcow2");
  {  // the chain's image lock goes with it
    auto chain = block::Chain::open(dir.file("big.qcow2"));
    ASSERT_TRUE(chain) << chain.error().message();
    const uint64_t size = chain->size(0);
    auto expect_extent = [&](uint64_t offset, uint64_t length, bool present, bool data) {
      auto e = chain->layer_status(0, offset, size - offset);
      ASSERT_TRUE(e) << e.error().message();
      EXPECT_EQ(e->start, offset);
      EXPECT_EQ(e->length, length) << "at " << offset;
      EXPECT_EQ(e->present, present) << "at " << offset;
      EXPECT_EQ(e->data, data) << "at " << offset;
      auto top = chain->status(offset, size - offset);
      ASSERT_TRUE(top) << top.error().message();
      EXPECT_EQ(top->length, length) << "at " << offset;
    };
    expect_extent(0, 128 << 10, true, true);                            // two clusters, one after the other
    expect_extent(4096, (128 << 10) - 4096, true, true);               // from inside a cluster
    expect_extent(128 << 10, (512 << 20) - (128 << 10), false, false);  // the rest of the first L2 table
    expect_extent(512ull << 20, 64 << 10, true, true);
    expect_extent((512ull << 20) + (64 << 10), (88ull << 20) - (64 << 10), false, false);
    expect_extent(600ull << 20, 64 << 10, true, false);                // the zero cluster
    // Past it: the rest of that L2 table, then unallocated L1 entries up to 1023 GiB.
    expect_extent((600ull << 20) + (64 << 10), (1023ull << 30) - (600ull << 20) - (64 << 10), false, false);
    expect_extent(1023ull << 30, 64 << 10, true, true);
    expect_extent((1023ull << 30) + (64 << 10), (1ull << 30) - (64 << 10), false, false);
    auto capped = chain->layer_status(0, 128 << 10, 4096);
    ASSERT_TRUE(capped);
    EXPECT_EQ(capped->length, 4096u);
    ASSERT_TRUE(chain->close());
  }

  // The verbs over it, as qemu-img prints them; clusters whose host
  // offsets do not follow are extents of their own.
  SH_OK(d + "qemu-io -c 'write -P 4 2M 64k' -c 'write -P 5 1984k 64k' big.qcow2");
  SH_OK(d + "qemu-img create -q -f qcow2 empty.qcow2 1T");
  SH_OK(d + "qemu-img create -q -f qcow2 -b big.qcow2 -F qcow2 top.qcow2");
  SH_OK(d + "qemu-io -c 'write -P 6 1023G 4k' -c 'write -P 7 5G 64k' top.qcow2");
  SH_OK(d + "qemu-img convert -O qcow2 top.qcow2 flat.qcow2");
  for (const char* image : {"big.qcow2", "empty.qcow2", "top.qcow2"}) {
    EXPECT_SAME(dir, std::string("map --output json ") + image);
    EXPECT_SAME(dir, std::string("map ") + image);
    EXPECT_SAME(dir, std::string("measure -O qcow2 ") + image);
  }
  for (const char* c : {"big.qcow2 empty.qcow2", "empty.qcow2 empty.qcow2", "top.qcow2 flat.qcow2",
                        "-s top.qcow2 flat.qcow2", "big.qcow2 top.qcow2"}) {
    EXPECT_SAME(dir, std::string("compare ") + c);
  }
  // rebase onto nothing and onto the empty image: the data of the old
  // backing file is copied up (only where it holds some), reads the same.
  SH_OK(d + "cp top.qcow2 r1.qcow2 && cp top.qcow2 r2.qcow2");
  SH_OK(d + tern_img() + " rebase -b '' r1.qcow2");
  SH_OK(d + tern_img() + " rebase -b empty.qcow2 -F qcow2 r2.qcow2");
  for (const char* image : {"r1.qcow2", "r2.qcow2"}) {
    SH_OK(d + "qemu-img check -q " + image);
    SH_OK(d + "qemu-img compare -q flat.qcow2 " + image);
  }
}

// A command that fails leaves no output behind, and an image it was to
// replace is as it was: convert and create write a new image under a
// temporary name and rename it into place once it is complete. (qemu-img
// leaves a partial output of a failed convert; tern-img does not.)
TEST(TernImgVerbs, FailuresLeaveNoPartialOutput) {
  TempDir dir;
  const std::string d = "cd '" + dir.file("") + "' && ";
  // A compressed cluster in the middle whose bytes are garbage: reading it fails.
  SH_OK(d + "qemu-img create -q -f raw src.raw 4M && qemu-io -f raw -c 'write -P 1 0 4M' src.raw");
  SH_OK(d + "qemu-img convert -c -O qcow2 src.raw bad.qcow2 && rm src.raw");
  SH_OK(d + "python3 -c \"import struct\nf=open('bad.qcow2','r+b'); h=f.read(48)\n"
            "f.seek(struct.unpack('>Q',h[40:48])[0]); l2=struct.unpack('>Q',f.read(8))[0]&0xfffffffffffe00\n"
            "f.seek(l2+40*8); e=struct.unpack('>Q',f.read(8))[0]\n"
            "f.seek(e&((1<<54)-1)); f.write(bytes([0xff])*64)\"");
  auto listing = [&] {
    std::string out;
    EXPECT_EQ(sh(d + "ls -a", &out), 0);
    return out;
  };
  const std::string before = listing();
  for (const char* format : {"raw", "qcow2"}) {
    SCOPED_TRACE(format);
    std::string out;
    EXPECT_EQ(sh(d + "qemu-img convert -O " + format + " bad.qcow2 q.out", &out), 1) << out;
    SH_OK(d + "rm q.out");
    EXPECT_EQ(sh(d + tern_img() + " convert -O " + format + " bad.qcow2 t.out", &out), 1) << out;
    EXPECT_EQ(listing(), before) << out;
    // Over an existing file: left as it was.
    SH_OK(d + "echo keep > t.out");
    EXPECT_EQ(sh(d + tern_img() + " convert -O " + format + " bad.qcow2 t.out", &out), 1) << out;
    ASSERT_EQ(sh(d + "head -c 16 t.out", &out), 0);
    EXPECT_EQ(out, "keep\n");
    SH_OK(d + "rm t.out");
  }
  // create: a size the format cannot hold (qemu-img leaves no qcow2 image
  // either; of a raw one it leaves an empty file).
  for (const char* format : {"raw", "qcow2"}) {
    SCOPED_TRACE(format);
    std::string out;
    EXPECT_EQ(sh(d + tern_img() + " create -f " + format + " huge.img 100P", &out), 1) << out;
    EXPECT_EQ(listing(), before) << out;
  }
  // A successful convert over an existing file replaces it.
  SH_OK(d + "qemu-img create -q -f qcow2 good.qcow2 1M && echo keep > t.out");
  SH_OK(d + tern_img() + " convert -O qcow2 good.qcow2 t.out");
  SH_OK(d + "qemu-img check -q t.out && qemu-img compare -q good.qcow2 t.out");
  // An image that is open (its image lock held) is not replaced, as
  // qemu-img refuses to write an image in use.
  SH_OK(d + "qemu-img create -q -f qcow2 busy.qcow2 1M");
  {
    auto busy = open_image(dir.file("busy.qcow2"), /*read_only=*/true);
    ASSERT_TRUE(busy);
    std::string out;
    EXPECT_EQ(sh(d + tern_img() + " convert -O qcow2 good.qcow2 busy.qcow2", &out), 1) << out;
    EXPECT_NE(out.find("lock"), std::string::npos) << out;
    EXPECT_EQ(sh(d + tern_img() + " create -f raw busy.qcow2 1M", &out), 1) << out;
  }
  SH_OK(d + "qemu-img info busy.qcow2 | grep -q 'file format: qcow2'");
}

// The engine's compressed write over every kind of old mapping (standard,
// zero, compressed sharing a host cluster, unallocated), then a standard
// write onto a compressed cluster (copy-on-write from it) and a discard:
// qemu-img check stays clean and qemu-io reads what was written.
TEST(TernImgVerbs, CompressedWritesOverOldMappings) {
  TempDir dir;
  const std::string img = dir.file("c.qcow2");
  SH_OK("qemu-img create -q -f qcow2 -o cluster_size=4096 '" + img + "' 1M");
  SH_OK("qemu-io -c 'write -P 1 0 8k' -c 'write -z 8k 4k' '" + img + "'");
  {
    auto disk = open_image(img);
    ASSERT_TRUE(disk);
    auto* q = static_cast<Qcow2Disk*>(disk.get());
    std::vector<uint8_t> cluster(4096);
    auto compressed = [&](uint64_t offset, uint8_t pattern) {
      std::fill(cluster.begin(), cluster.end(), pattern);
      return q->with_engine([&](Engine& e) { return e.write_compressed(offset, cluster); });
    };
    for (uint64_t c = 0; c < 8; ++c) ASSERT_TRUE(compressed(c * 4096, static_cast<uint8_t>(0x10 + c)));
    // Again over the compressed ones (their shared host cluster released).
    for (uint64_t c = 2; c < 5; ++c) ASSERT_TRUE(compressed(c * 4096, static_cast<uint8_t>(0x20 + c)));
    EXPECT_FALSE(q->with_engine([&](Engine& e) { return e.write_compressed(100, cluster); }));  // unaligned
    auto status = q->with_engine([](Engine& e) { return e.cluster_status(4096); });
    ASSERT_TRUE(status);
    EXPECT_EQ(status->kind, ClusterKind::Compressed);
    auto ctx = disk->make_io_context(1);
    ASSERT_TRUE(ctx);
    std::vector<uint8_t> part(512, 0x77);
    ASSERT_TRUE(pwrite_disk(**ctx, 5 * 4096 + 1024, part));  // copy-on-write from a compressed cluster
    Request d;
    d.op = Op::Discard;
    d.offset = 6 * 4096;
    d.length = 4096;
    ASSERT_TRUE(run_one(**ctx, d));
    ctx->reset();
    ASSERT_TRUE(disk->close());
  }
  SH_OK("qemu-img check -q '" + img + "'");
  SH_OK("qemu-io -c 'read -P 0x10 0 4k' -c 'read -P 0x11 4k 4k' -c 'read -P 0x22 8k 4k' "
        "-c 'read -P 0x23 12k 4k' -c 'read -P 0x24 16k 4k' -c 'read -P 0x15 20k 1k' "
        "-c 'read -P 0x77 21k 512' -c 'read -P 0x15 21.5k 2.5k' -c 'read -P 0 24k 4k' "
        "-c 'read -P 0x17 28k 4k' '" + img + "'");
}

}  // namespace
}  // namespace tern::block::qcow2::test

// tern-img compare [-s] [-q] [-f FMT] [-F FMT] [-U] A B: qemu-img compare's
// verdicts, messages and exit statuses: 0 identical, 1 different, 2 an
// image could not be opened, 4 a read failed. The first difference is
// named by its 512-byte sector, as qemu-img does; without -s a size
// difference is allowed when the larger image's tail reads as zeros.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <vector>

#include "block/chain.h"
#include "tools/tern_img/verbs.h"

namespace tern::img {
namespace {

constexpr uint64_t kChunk = 2 << 20;  // qemu-img's IO_BUF_SIZE
constexpr uint64_t kSector = 512;

struct CompareArgs {
  bool strict = false;
  bool quiet = false;
  bool force_share = false;
  std::string format_a;
  std::string format_b;
  std::string a;
  std::string b;
};

block::ImageType type_of(const std::string& format) {
  if (format == "qcow2") return block::ImageType::Qcow2;
  if (format == "raw") return block::ImageType::Raw;
  return block::ImageType::Auto;
}

// Offset of the first 512-byte sector of `n` bytes that is not all zeros.
std::optional<uint64_t> first_nonzero(const uint8_t* p, uint64_t n) {
  for (uint64_t i = 0; i < n; i += kSector) {
    uint64_t len = std::min(kSector, n - i);
    if (std::any_of(p + i, p + i + len, [](uint8_t b) { return b != 0; })) return i;
  }
  return std::nullopt;
}

std::optional<uint64_t> first_difference(const uint8_t* x, const uint8_t* y, uint64_t n) {
  for (uint64_t i = 0; i < n; i += kSector) {
    if (std::memcmp(x + i, y + i, std::min(kSector, n - i)) != 0) return i;
  }
  return std::nullopt;
}

class Comparison {
 public:
  Comparison(const CompareArgs& args, block::Chain& a, block::Chain& b)
      : args_(args), a_(a), b_(b), buf_a_(kChunk), buf_b_(kChunk) {}

  int run() {
    const uint64_t size_a = a_.size(0), size_b = b_.size(0);
    if (args_.strict && size_a != size_b) {
      say("Strict mode: Image size mismatch!\n");
      return 1;
    }
    const uint64_t common = std::min(size_a, size_b);
    for (uint64_t offset = 0; offset < common;) {
      auto sa = a_.status(offset, common - offset);
      if (!sa) return status_error(args_.a, sa.error());
      auto sb = b_.status(offset, common - offset);
      if (!sb) return status_error(args_.b, sb.error());
      uint64_t chunk = std::min(sa->length, sb->length);
      if (args_.strict && (sa->present != sb->present || sa->zero != sb->zero || sa->data != sb->data ||
                           sa->has_offset != sb->has_offset)) {
        say("Strict mode: Offset " + std::to_string(offset) + " block status mismatch!\n");
        return 1;
      }
      if ((sa->zero && sb->zero) || (!sa->present && !sb->present)) {
        offset += chunk;
        continue;
      }
      chunk = std::min(chunk, kChunk);
      if (sa->present && sb->present) {
        if (int r = read(a_, args_.a, offset, chunk, buf_a_); r) return r;
        if (int r = read(b_, args_.b, offset, chunk, buf_b_); r) return r;
        if (auto d = first_difference(buf_a_.data(), buf_b_.data(), chunk)) return mismatch(offset + *d);
      } else {
        // Only one side holds anything here: it must read as zeros.
        if (int r = check_zero(sa->present ? a_ : b_, sa->present ? args_.a : args_.b, offset, chunk); r) {
          return r;
        }
      }
      offset += chunk;
    }
    if (size_a != size_b) {
      say("Warning: Image size mismatch!\n");
      block::Chain& over = size_a > size_b ? a_ : b_;
      const std::string& name = size_a > size_b ? args_.a : args_.b;
      const uint64_t end = std::max(size_a, size_b);
      for (uint64_t offset = common; offset < end;) {
        auto s = over.status(offset, end - offset);
        if (!s) return status_error(name, s.error());
        uint64_t chunk = s->length;
        if (s->present) {
          chunk = std::min(chunk, kChunk);
          if (int r = check_zero(over, name, offset, chunk); r) return r;
        }
        offset += chunk;
      }
    }
    say("Images are identical.\n");
    return 0;
  }

 private:
  void say(const std::string& text) const {
    if (!args_.quiet) std::fputs(text.c_str(), stdout);
  }
  int mismatch(uint64_t offset) const {
    say("Content mismatch at offset " + std::to_string(offset) + "!\n");
    return 1;
  }
  int status_error(const std::string& name, const block::Error& e) const {
    std::fprintf(stderr, "tern-img: Block status error in %s: %s\n", name.c_str(), e.message().c_str());
    return 3;
  }
  int read(block::Chain& chain, const std::string& name, uint64_t offset, uint64_t n,
           std::vector<uint8_t>& buf) const {
    if (auto r = chain.read(0, offset, std::span<uint8_t>(buf.data(), n)); !r) {
      std::fprintf(stderr, "tern-img: Error while reading offset %llu of %s: %s\n",
                   static_cast<unsigned long long>(offset), name.c_str(), r.error().message().c_str());
      return 4;
    }
    return 0;
  }
  int check_zero(block::Chain& chain, const std::string& name, uint64_t offset, uint64_t n) {
    if (int r = read(chain, name, offset, n, buf_a_); r) return r;
    if (auto nz = first_nonzero(buf_a_.data(), n)) return mismatch(offset + *nz);
    return 0;
  }

  const CompareArgs& args_;
  block::Chain& a_;
  block::Chain& b_;
  std::vector<uint8_t> buf_a_;
  std::vector<uint8_t> buf_b_;
};

int run_compare(const CompareArgs& args) {
  block::ChainOptions oa, ob;
  oa.top_type = type_of(args.format_a);
  ob.top_type = type_of(args.format_b);
  oa.lock = ob.lock = !args.force_share;
  auto a = block::Chain::open(args.a, oa);
  if (!a) {
    std::fprintf(stderr, "tern-img: Could not open '%s': %s\n", args.a.c_str(), a.error().message().c_str());
    return 2;
  }
  auto b = block::Chain::open(args.b, ob);
  if (!b) {
    std::fprintf(stderr, "tern-img: Could not open '%s': %s\n", args.b.c_str(), b.error().message().c_str());
    return 2;
  }
  return Comparison(args, *a, *b).run();
}

}  // namespace

void add_compare(CLI::App& app, int& status) {
  auto args = std::make_shared<CompareArgs>();
  auto* cmd = app.add_subcommand("compare", "compare two images' contents (exit 0 identical, 1 different)");
  cmd->add_flag("-s", args->strict, "strict: sizes and allocation must match too");
  cmd->add_flag("-q", args->quiet, "print nothing, only the exit status tells");
  cmd->add_option("-f", args->format_a, "first image's format (probed)")->check(CLI::IsMember({"raw", "qcow2"}));
  cmd->add_option("-F", args->format_b, "second image's format (probed)")->check(CLI::IsMember({"raw", "qcow2"}));
  cmd->add_flag("-U,--force-share", args->force_share, "open without taking image locks");
  cmd->add_option("image1", args->a)->required();
  cmd->add_option("image2", args->b)->required();
  cmd->callback([args, &status] { status = run_compare(*args); });
}

}  // namespace tern::img

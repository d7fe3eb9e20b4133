// tern-img map [--output human|json] [-f FMT] IMG: the extents of an image
// over its backing chain, as qemu-img map prints them (docs/qcow2.md, "Tools").
#include <cstdio>

#include "block/chain.h"
#include "tools/tern_img/verbs.h"

namespace tern::img {
namespace {

struct MapArgs {
  std::string output = "human";
  std::string format;
  bool force_share = false;
  std::string file;
};

// qemu-img's entry_mergeable(): same kind, same layer, offsets that follow.
bool mergeable(const block::ChainExtent& a, const block::ChainExtent& b) {
  if (a.length == 0) return false;
  if (a.zero != b.zero || a.data != b.data || a.depth != b.depth || a.present != b.present ||
      a.has_offset != b.has_offset) {
    return false;
  }
  return !a.has_offset || a.offset + a.length == b.offset;
}

class Printer {
 public:
  Printer(bool json, const block::Chain& chain) : json_(json), chain_(chain) {
    if (json_) {
      std::printf("[");
    } else {
      std::printf("%-16s%-16s%-16s%s\n", "Offset", "Length", "Mapped to", "File");
    }
  }
  // False when the human form cannot show the extent (qemu-img's error).
  bool print(const block::ChainExtent& e, bool last) {
    if (json_) {
      std::printf("{ \"start\": %llu, \"length\": %llu, \"depth\": %zu, \"present\": %s, \"zero\": %s, "
                  "\"data\": %s",
                  static_cast<unsigned long long>(e.start), static_cast<unsigned long long>(e.length),
                  e.depth, e.present ? "true" : "false", e.zero ? "true" : "false",
                  e.data ? "true" : "false");
      if (e.has_offset) std::printf(", \"offset\": %llu", static_cast<unsigned long long>(e.offset));
      std::printf("}%s", last ? "]\n" : ",\n");
      return true;
    }
    if (!e.data) return true;
    if (!e.has_offset) {
      std::fprintf(stderr, "tern-img: File contains external, encrypted or compressed clusters.\n");
      return false;
    }
    std::printf("%#-16llx%#-16llx%#-16llx%s\n", static_cast<unsigned long long>(e.start),
                static_cast<unsigned long long>(e.length), static_cast<unsigned long long>(e.offset),
                chain_.path(e.depth).c_str());
    return true;
  }

 private:
  bool json_;
  const block::Chain& chain_;
};

int run_map(const MapArgs& a) {
  block::ChainOptions o;
  o.top_type = a.format == "qcow2" ? block::ImageType::Qcow2
               : a.format == "raw" ? block::ImageType::Raw
                                   : block::ImageType::Auto;
  o.lock = !a.force_share;
  auto chain = block::Chain::open(a.file, o);
  if (!chain) {
    std::fprintf(stderr, "tern-img: Could not open '%s': %s\n", a.file.c_str(), chain.error().message().c_str());
    return 1;
  }
  const uint64_t size = chain->size(0);
  Printer printer(a.output == "json", *chain);
  block::ChainExtent current;
  for (uint64_t offset = 0; offset < size;) {
    auto next = chain->status(offset, size - offset);
    if (!next) {
      std::fflush(stdout);
      std::fprintf(stderr, "tern-img: %s\n", next.error().message().c_str());
      return 1;
    }
    offset += next->length;
    if (mergeable(current, *next)) {
      current.length += next->length;
      continue;
    }
    if (current.length > 0 && !printer.print(current, false)) return 1;
    current = *next;
  }
  if (size == 0) {
    if (a.output == "json") std::printf("]\n");
    return 0;
  }
  return printer.print(current, true) ? 0 : 1;
}

}  // namespace

void add_map(CLI::App& app, int& status) {
  auto args = std::make_shared<MapArgs>();
  auto* cmd = app.add_subcommand("map", "show where an image's data lies, over its backing chain");
  cmd->add_option("--output", args->output, "human or json")->check(CLI::IsMember({"human", "json"}));
  cmd->add_option("-f", args->format, "image format (probed)")->check(CLI::IsMember({"raw", "qcow2"}));
  cmd->add_flag("-U,--force-share", args->force_share, "accepted for qemu-img compatibility");
  cmd->add_option("file", args->file)->required();
  cmd->callback([args, &status] { status = run_map(*args); });
}

}  // namespace tern::img

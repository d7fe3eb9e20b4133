// tern-img resize FILE [+]SIZE: grows through DiskFile::resize, the same
// code path as a live resize of a running VM's disk.
#include <cstdio>

#include "block/open.h"
#include "tools/tern_img/verbs.h"

namespace tern::img {
namespace {

struct ResizeArgs {
  std::string file;
  std::string size;
};

int run_resize(const ResizeArgs& a) {
  bool relative = !a.size.empty() && a.size[0] == '+';
  auto size = parse_size(relative ? a.size.substr(1) : a.size);
  if (!size) {
    std::fprintf(stderr, "tern-img: invalid size '%s'\n", a.size.c_str());
    return 1;
  }
  block::OpenOptions o;
  o.path = a.file;
  o.allow_backing = true;  // the engine then refuses with its own reason
  auto disk = block::open_disk(o);
  if (!disk) {
    std::fprintf(stderr, "tern-img: %s\n", disk.error().message().c_str());
    return 1;
  }
  uint64_t target = relative ? (*disk)->size() + *size : *size;
  if (auto r = (*disk)->resize(target); !r) {
    std::fprintf(stderr, "tern-img: resize: %s\n", r.error().message().c_str());
    return 1;
  }
  if (auto r = (*disk)->close(); !r) {
    std::fprintf(stderr, "tern-img: %s\n", r.error().message().c_str());
    return 1;
  }
  std::printf("Image resized.\n");
  return 0;
}

}  // namespace

void add_resize(CLI::App& app, int& status) {
  auto args = std::make_shared<ResizeArgs>();
  auto* cmd = app.add_subcommand("resize", "grow an image");
  cmd->add_option("file", args->file)->required();
  cmd->add_option("size", args->size, "new size, or +SIZE to add")->required();
  cmd->callback([args, &status] { status = run_resize(*args); });
}

}  // namespace tern::img

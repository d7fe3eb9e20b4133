// tern-img convert [-p] [-f FMT] -O raw|qcow2 IN OUT
#include <cstdio>

#include "block/convert.h"
#include "tools/tern_img/verbs.h"

namespace tern::img {
namespace {

struct ConvertArgs {
  bool progress = false;
  std::string input_format;
  std::string output_format = "raw";
  std::string input;
  std::string output;
};

int run_convert(const ConvertArgs& a) {
  block::ConvertOptions o;
  o.input = a.input;
  o.output = a.output;
  o.output_type = a.output_format == "qcow2" ? block::ImageType::Qcow2 : block::ImageType::Raw;
  if (a.progress) {
    // qemu-img's progress line: "    (42.00/100%)", redrawn in place.
    o.progress = [](double fraction) {
      std::printf("\r    (%.2f/100%%)", fraction * 100.0);
      std::fflush(stdout);
    };
  }
  auto r = block::convert_image(o);
  if (a.progress) std::printf("\n");
  if (!r) {
    std::fprintf(stderr, "tern-img: convert: %s\n", r.error().message().c_str());
    return 1;
  }
  return 0;
}

}  // namespace

void add_convert(CLI::App& app, int& status) {
  auto args = std::make_shared<ConvertArgs>();
  auto* cmd = app.add_subcommand("convert", "copy an image into a new raw or qcow2 image");
  cmd->add_flag("-p", args->progress, "show progress");
  cmd->add_option("-f", args->input_format, "input format (probed)");
  cmd->add_option("-O", args->output_format, "output format")->check(CLI::IsMember({"raw", "qcow2"}));
  cmd->add_option("input", args->input)->required();
  cmd->add_option("output", args->output)->required();
  cmd->callback([args, &status] { status = run_convert(*args); });
}

}  // namespace tern::img

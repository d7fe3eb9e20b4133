// tern-img convert [-p] [-c] [-f FMT] [-O raw|qcow2] [-o OPTIONS] [-B BACKING [-F FMT]] IN OUT
#include <cstdio>

#include "block/convert.h"
#include "block/open.h"
#include "tools/tern_img/verbs.h"

namespace tern::img {
namespace {

struct ConvertArgs {
  bool progress = false;
  bool compress = false;
  std::string input_format;
  std::string output_format = "raw";
  std::string options;
  std::string backing;
  std::string backing_format;
  std::string input;
  std::string output;
};

int run_convert(const ConvertArgs& a) {
  block::ConvertOptions o;
  o.input = a.input;
  o.input_type = block::parse_image_type(a.input_format).value_or(block::ImageType::Auto);
  o.output = a.output;
  o.output_type = a.output_format == "qcow2" ? block::ImageType::Qcow2 : block::ImageType::Raw;
  o.compress = a.compress;
  o.qcow2.backing_file = a.backing;
  o.qcow2.backing_format = a.backing_format;
  if (!parse_qcow2_options(a.options, o.qcow2)) return 1;
  if (o.output_type == block::ImageType::Raw && (a.compress || !a.options.empty() || !a.backing.empty())) {
    std::fprintf(stderr, "tern-img: -c, -o and -B need -O qcow2\n");
    return 1;
  }
  if (a.progress) {
    // qemu-img's progress line: "    (42.00/100%)", redrawn in place.
    // Redrawn when it moved by 1% or more, as qemu-img does, and at the end.
    o.progress = [last = -1.0](double fraction) mutable {
      double percent = fraction * 100.0;
      if (percent - last < 1.0 && percent < 100.0) return;
      last = percent;
      std::printf("\r    (%.2f/100%%)", percent);
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
  cmd->add_flag("-c", args->compress, "compress every cluster (qcow2 output)");
  cmd->add_option("-f", args->input_format, "input format (probed)")->check(CLI::IsMember({"raw", "qcow2"}));
  cmd->add_option("-O", args->output_format, "output format (raw)")->check(CLI::IsMember({"raw", "qcow2"}));
  cmd->add_option("-o", args->options,
                  "qcow2 output: cluster_size=,refcount_bits=,compat=0.10|1.1,compression_type=zlib|zstd");
  cmd->add_option("-B", args->backing, "qcow2 output: backing file (only differing clusters are written)");
  cmd->add_option("-F", args->backing_format, "backing file format")->check(CLI::IsMember({"raw", "qcow2"}));
  cmd->add_option("input", args->input)->required();
  cmd->add_option("output", args->output)->required();
  cmd->callback([args, &status] { status = run_convert(*args); });
}

}  // namespace tern::img

// tern-img measure [--output human|json] [-O raw|qcow2] [-o OPTIONS]
//                  [-f FMT] (--size N | IMG)
// The file size a new image needs, as qemu-img measure computes it:
// "required" for the data of IMG (or none with --size), "fully allocated"
// for every cluster; bitmaps size 0 for a QCOW2 v3 input (Tern keeps no
// persistent bitmaps) when the output is v3, as qemu-img prints it.
#include <algorithm>
#include <cstdio>
#include <optional>
#include <sstream>

#include "block/chain.h"
#include "block/image.h"
#include "block/open.h"
#include "tools/tern_img/verbs.h"

namespace tern::img {
namespace {

struct MeasureArgs {
  std::string output = "human";
  std::string output_format = "raw";
  std::string options;
  std::string input_format;
  std::string size;
  std::string file;
};

uint64_t round_up(uint64_t v, uint64_t to) { return (v + to - 1) / to * to; }
uint64_t div_round_up(uint64_t v, uint64_t by) { return (v + by - 1) / by; }

// qcow2_refcount_metadata_size(): refcount blocks and table clusters for
// `clusters` clusters, counting the refcount metadata itself (fixed point).
uint64_t refcount_metadata_size(uint64_t clusters, uint64_t cluster_size, uint32_t refcount_bits) {
  const uint64_t blocks_per_table_cluster = cluster_size / 8;
  const uint64_t refcounts_per_block = cluster_size * 8 / refcount_bits;
  uint64_t table = 0, blocks = 0, n = 0, last;
  do {
    last = n;
    blocks = div_round_up(clusters + table + blocks, refcounts_per_block);
    table = div_round_up(blocks, blocks_per_table_cluster);
    n = clusters + blocks + table;
  } while (n != last);
  return (blocks + table) * cluster_size;
}

// qcow2_calc_prealloc_size(): header, L2 tables, L1 table, refcounts and
// every data cluster.
uint64_t fully_allocated_size(uint64_t total, uint64_t cluster_size, uint32_t refcount_bits) {
  const uint64_t aligned = round_up(total, cluster_size);
  uint64_t meta = cluster_size;  // header
  uint64_t l2_entries = round_up(aligned / cluster_size, cluster_size / 8);
  meta += l2_entries * 8;
  uint64_t l1_entries = round_up(l2_entries * 8 / cluster_size, cluster_size / 8);
  meta += l1_entries * 8;
  meta += refcount_metadata_size((meta + aligned) / cluster_size, cluster_size, refcount_bits);
  return meta + aligned;
}

int run_measure(const MeasureArgs& a) {
  if (!a.size.empty() && !a.file.empty()) return report_error("--size N cannot be used together with a filename.");
  if (a.size.empty() && a.file.empty()) return report_error("Either --size N or one filename must be specified.");
  // -o: qcow2 creation options, and preallocation= (full/falloc: every
  // data cluster required).
  block::CreateOptions create;
  std::string preallocation = "off";
  std::string rest;
  {
    std::stringstream list(a.options);
    std::string item;
    while (std::getline(list, item, ',')) {
      if (item.starts_with("preallocation=")) {
        preallocation = item.substr(14);
      } else if (!item.empty()) {
        rest += (rest.empty() ? "" : ",") + item;
      }
    }
  }
  if (preallocation != "off" && preallocation != "metadata" && preallocation != "falloc" &&
      preallocation != "full") {
    return report_error("Invalid parameter '" + preallocation + "'");
  }
  if (a.output_format == "raw" && !rest.empty()) return report_error("raw output takes only preallocation=");
  if (!parse_qcow2_options(rest, create)) return 1;

  uint64_t size = 0;
  std::optional<block::Chain> input;
  if (!a.size.empty()) {
    auto parsed = parse_size(a.size);
    if (!parsed) return report_error("Invalid image size specified. Must be between 0 and 9223372036854775807.");
    size = *parsed;
  } else {
    block::ChainOptions o;
    o.top_type = block::parse_image_type(a.input_format).value_or(block::ImageType::Auto);
    auto chain = block::Chain::open(a.file, o);
    if (!chain) return report_error("Could not open '" + a.file + "': " + chain.error().message());
    input = std::move(*chain);
    size = input->size(0);
  }

  uint64_t required = 0, fully = 0;
  std::optional<uint64_t> bitmaps;
  if (a.output_format == "raw") {
    required = fully = round_up(size, 512);
  } else {
    const uint64_t cluster = create.cluster_size;
    const uint64_t virtual_size = round_up(size, cluster);
    if (div_round_up(virtual_size / cluster, cluster / 8) * 8 > (32ull << 20)) {
      return report_error("The image size is too large (try using a larger cluster size)");
    }
    uint64_t data = 0;  // data clusters the input needs
    if (input) {
      if (!create.backing_file.empty()) {
        data = virtual_size;  // the new backing file may share nothing
      } else {
        for (uint64_t offset = 0; offset < size;) {
          auto e = input->status(offset, size - offset);
          if (!e) return report_error(a.file + ": " + e.error().message());
          uint64_t n = e->length;
          if (!e->zero && e->present && e->data) {
            n = round_up(offset + n, cluster) - offset;
            data += offset % cluster + n;
          }
          offset += n;
        }
      }
      if (create.version >= 3 && input->format(0) == "qcow2") {
        auto info = block::read_image_info(a.file);
        if (info && info->compat != "0.10") bitmaps = 0;
      }
    }
    if (preallocation == "full" || preallocation == "falloc") data = virtual_size;
    fully = fully_allocated_size(virtual_size, cluster, create.refcount_bits);
    required = fully - virtual_size + data;
  }
  if (a.output == "json") {
    std::printf("{\n");
    if (bitmaps) std::printf("    \"bitmaps\": %llu,\n", static_cast<unsigned long long>(*bitmaps));
    std::printf("    \"required\": %llu,\n    \"fully-allocated\": %llu\n}\n",
                static_cast<unsigned long long>(required), static_cast<unsigned long long>(fully));
  } else {
    std::printf("required size: %llu\nfully allocated size: %llu\n", static_cast<unsigned long long>(required),
                static_cast<unsigned long long>(fully));
    if (bitmaps) std::printf("bitmaps size: %llu\n", static_cast<unsigned long long>(*bitmaps));
  }
  return 0;
}

}  // namespace

void add_measure(CLI::App& app, int& status) {
  auto args = std::make_shared<MeasureArgs>();
  auto* cmd = app.add_subcommand("measure", "how large a new image must be (qemu-img measure)");
  cmd->add_option("--output", args->output, "human or json")->check(CLI::IsMember({"human", "json"}));
  cmd->add_option("-O", args->output_format, "output format (raw)")->check(CLI::IsMember({"raw", "qcow2"}));
  cmd->add_option("-o", args->options,
                  "qcow2: cluster_size=,refcount_bits=,compat=,backing_file=,preallocation=off|metadata|falloc|full");
  cmd->add_option("-f", args->input_format, "input format (probed)")->check(CLI::IsMember({"raw", "qcow2"}));
  cmd->add_option("--size", args->size, "virtual size of a new image, e.g. 10G");
  cmd->add_option("file", args->file, "the image to convert");
  cmd->callback([args, &status] { status = run_measure(*args); });
}

}  // namespace tern::img

// tern-img rebase [-q] [-u] [-f FMT] -b NEW [-F FMT] IMG: makes NEW the
// backing file of the QCOW2 image IMG, as qemu-img rebase. Safe mode
// (default) first copies into IMG every cluster it leaves to its backing
// files whose contents differ between the old chain and NEW, so IMG reads
// the same afterwards; -u rewrites the header only. NEW ("" for none) is
// relative to IMG's directory; it must obey the rules of every open (no
// loop back to IMG, at most 16 files under IMG, no block device:
// docs/qcow2.md, "Backing chains").
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <optional>
#include <vector>

#include "block/chain.h"
#include "block/image.h"
#include "block/open.h"
#include "tools/tern_img/verbs.h"

namespace tern::img {
namespace {

constexpr uint64_t kChunk = 1 << 20;  // the most compared (and copied) at once

struct RebaseArgs {
  bool quiet = false;
  bool unsafe = false;
  std::string format;
  std::string backing;
  bool backing_given = false;
  std::string backing_format;
  std::string file;
};

// Checks that NEW can sit under IMG by the rules of every open (the block
// layer's walk, as if IMG named it: no loop back to IMG, at most 16
// backing files under IMG, no block device), then opens NEW's chain.
std::optional<block::Chain> open_new_backing(const RebaseArgs& a, const std::string& path, int& status) {
  block::BackingWalk walk;
  walk.image = a.file;
  walk.backing_file = a.backing;
  walk.backing_format = a.backing_format;
  std::vector<block::BackingFile> files;
  if (auto r = block::walk_backing_chain(walk, files); !r) {
    status = report_error("Could not open new backing file '" + path + "': " + r.error().message());
    return std::nullopt;
  }
  block::ChainOptions o;
  o.top_type = block::parse_image_type(a.backing_format).value_or(block::ImageType::Auto);
  o.lock = false;
  auto chain = block::Chain::open(path, o);
  if (!chain) {
    status = report_error("Could not open new backing file '" + path + "': " + chain.error().message());
    return std::nullopt;
  }
  status = 0;
  return std::move(*chain);
}

// Reads `chain`'s view of [offset, offset + out.size()); zeros past its end
// or without a chain.
block::Result<void> read_view(block::Chain* chain, size_t layer, uint64_t offset, std::span<uint8_t> out) {
  std::fill(out.begin(), out.end(), 0);
  if (chain == nullptr || layer >= chain->layers() || offset >= chain->size(layer)) return {};
  uint64_t n = std::min<uint64_t>(out.size(), chain->size(layer) - offset);
  return chain->read(layer, offset, out.subspan(0, n));
}

// How many bytes from `offset` (at most `max`) `chain`'s view from `layer`
// down reads as zeros (0: it holds something there); no chain, or past its
// end, is zeros all along.
block::Result<uint64_t> zeros_in_view(block::Chain* chain, size_t layer, uint64_t offset, uint64_t max) {
  if (chain == nullptr || layer >= chain->layers() || offset >= chain->size(layer)) return max;
  auto s = chain->status(offset, max, layer);
  if (!s) return std::unexpected(s.error());
  return s->zero ? s->length : 0;
}

// The ranges IMG leaves to its backing files are compared between the old
// chain and NEW a chunk at a time; where both read as zeros (by their block
// status) nothing is read, so the cost follows the data the backing files
// hold, not the virtual size.
int copy_differences(const RebaseArgs& a, block::Chain& image, block::Chain* new_backing) {
  const uint64_t size = image.size(0);
  std::vector<uint8_t> old_data, new_data;
  for (uint64_t offset = 0; offset < size;) {
    auto e = image.layer_status(0, offset, size - offset);
    if (!e) return report_error(a.file + ": " + e.error().message());
    if (e->present) {
      offset += e->length;
      continue;
    }
    auto old_zeros = zeros_in_view(&image, 1, offset, e->length);
    if (!old_zeros) return report_error(a.file + ": " + old_zeros.error().message());
    if (*old_zeros > 0) {
      auto new_zeros = zeros_in_view(new_backing, 0, offset, *old_zeros);
      if (!new_zeros) return report_error(new_backing->path(0) + ": " + new_zeros.error().message());
      if (*new_zeros > 0) {
        offset += *new_zeros;
        continue;
      }
    }
    const uint64_t n = std::min(e->length, kChunk);
    old_data.resize(n);
    new_data.resize(n);
    if (auto r = read_view(&image, 1, offset, old_data); !r) return report_error(r.error().message());
    if (auto r = read_view(new_backing, 0, offset, new_data); !r) return report_error(r.error().message());
    if (old_data != new_data) {
      if (auto r = image.write(offset, old_data); !r) return report_error(a.file + ": " + r.error().message());
    }
    offset += n;
  }
  return 0;
}

int run_rebase(const RebaseArgs& a) {
  if (!a.backing_given) return report_error("Expecting one image file name (and -b NEW)");
  auto info = block::read_image_info(a.file);
  if (!info) return report_error("Could not open '" + a.file + "': " + info.error().message());
  const std::string new_path = a.backing.empty() ? std::string() : block::resolve_backing_name(a.file, a.backing);
  std::string new_format = a.backing_format;
  {
    std::optional<block::Chain> new_backing;
    if (!new_path.empty()) {
      int status = 0;
      new_backing = open_new_backing(a, new_path, status);
      if (!new_backing) {
        // -u may name a file that does not exist yet; nothing else passes.
        if (!a.unsafe || ::access(new_path.c_str(), F_OK) == 0) return status;
      } else if (new_format.empty()) {
        new_format = std::string(new_backing->format(0));
      }
    }
    if (!a.unsafe) {
      block::ChainOptions o;
      o.top_type = block::ImageType::Qcow2;
      o.writable_top = true;
      auto image = block::Chain::open(a.file, o);
      if (!image) return report_error("Could not open '" + a.file + "': " + image.error().message());
      if (int s = copy_differences(a, *image, new_backing ? &*new_backing : nullptr); s) return s;
      if (auto r = image->close(); !r) return report_error(a.file + ": " + r.error().message());
    }
  }  // every descriptor of IMG closed before its header is rewritten
  if (auto r = block::set_backing_file(a.file, a.backing, new_format); !r) {
    return report_error(a.file + ": " + r.error().message());
  }
  return 0;
}

}  // namespace

void add_rebase(CLI::App& app, int& status) {
  auto args = std::make_shared<RebaseArgs>();
  auto* cmd = app.add_subcommand("rebase", "change an image's backing file, keeping its contents (-u: header only)");
  cmd->add_flag("-q", args->quiet, "print nothing");
  cmd->add_flag("-u", args->unsafe, "unsafe: rewrite the header only");
  cmd->add_option("-f", args->format, "image format")->check(CLI::IsMember({"qcow2"}));
  cmd->add_option("-b", args->backing, "new backing file (\"\" for none)");
  cmd->add_option("-F", args->backing_format, "new backing file format (probed)")
      ->check(CLI::IsMember({"raw", "qcow2"}));
  cmd->add_option("file", args->file)->required();
  cmd->callback([args, cmd, &status] {
    args->backing_given = cmd->count("-b") > 0;
    status = run_rebase(*args);
  });
}

}  // namespace tern::img

// tern-img info [--output human|json] [-U] FILE: qemu-img info's fields.
#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>

#include "block/image.h"
#include "block/open.h"
#include "tools/tern_img/verbs.h"

namespace tern::img {
namespace {

struct InfoArgs {
  std::string file;
  std::string output = "human";
  bool force_share = false;
};

int run_info(const InfoArgs& a) {
  struct stat st {};
  if (::stat(a.file.c_str(), &st) != 0) {
    std::fprintf(stderr, "tern-img: %s: %s\n", a.file.c_str(), std::strerror(errno));
    return 1;
  }
  const uint64_t disk_size = static_cast<uint64_t>(st.st_blocks) * 512;
  auto q = block::read_image_info(a.file);
  const bool is_qcow2 = q.has_value();
  if (!is_qcow2 && q.error().code != block::Errc::BadHeader) {
    std::fprintf(stderr, "tern-img: %s\n", q.error().message().c_str());
    return 1;
  }
  if (!is_qcow2 && q.error().detail.find("not a QCOW2 image") == std::string::npos) {
    std::fprintf(stderr, "tern-img: %s\n", q.error().message().c_str());
    return 1;
  }
  const uint64_t virtual_size = is_qcow2 ? q->virtual_size : static_cast<uint64_t>(st.st_size);
  if (a.output == "json") {
    nlohmann::ordered_json j;
    // Key order as qemu-img prints it.
    if (is_qcow2 && !q->backing_file.empty() && !q->backing_format.empty()) {
      j["backing-filename-format"] = q->backing_format;
    }
    j["virtual-size"] = virtual_size;
    j["filename"] = a.file;
    if (is_qcow2) j["cluster-size"] = q->cluster_size;
    j["format"] = is_qcow2 ? "qcow2" : "raw";
    j["actual-size"] = disk_size;
    if (is_qcow2) {
      nlohmann::ordered_json data;
      data["compat"] = q->compat;
      data["compression-type"] = q->compression_type;
      if (q->compat != "0.10") {
        data["lazy-refcounts"] = q->lazy_refcounts;
      }
      data["refcount-bits"] = q->refcount_bits;
      if (q->compat != "0.10") {
        data["corrupt"] = q->corrupt;
        data["extended-l2"] = q->extended_l2;
      }
      j["format-specific"] = {{"type", "qcow2"}, {"data", data}};
      if (!q->backing_file.empty()) {
        j["full-backing-filename"] = block::resolve_backing_name(a.file, q->backing_file);
        j["backing-filename"] = q->backing_file;
      }
    }
    j["dirty-flag"] = is_qcow2 && q->dirty;
    std::printf("%s\n", j.dump(4).c_str());
    return 0;
  }
  std::printf("image: %s\n", a.file.c_str());
  std::printf("file format: %s\n", is_qcow2 ? "qcow2" : "raw");
  std::printf("virtual size: %s (%llu bytes)\n", human_size(virtual_size).c_str(),
              static_cast<unsigned long long>(virtual_size));
  std::printf("disk size: %s\n", human_size(disk_size).c_str());
  if (!is_qcow2) return 0;
  std::printf("cluster_size: %llu\n", static_cast<unsigned long long>(q->cluster_size));
  if (!q->backing_file.empty()) {
    std::string full = block::resolve_backing_name(a.file, q->backing_file);
    if (full == q->backing_file) {
      std::printf("backing file: %s\n", q->backing_file.c_str());
    } else {
      std::printf("backing file: %s (actual path: %s)\n", q->backing_file.c_str(), full.c_str());
    }
    if (!q->backing_format.empty()) std::printf("backing file format: %s\n", q->backing_format.c_str());
  }
  std::printf("Format specific information:\n");
  std::printf("    compat: %s\n", q->compat.c_str());
  std::printf("    compression type: %s\n", q->compression_type.c_str());
  if (q->compat != "0.10") std::printf("    lazy refcounts: %s\n", q->lazy_refcounts ? "true" : "false");
  std::printf("    refcount bits: %u\n", q->refcount_bits);
  if (q->compat != "0.10") {
    std::printf("    corrupt: %s\n", q->corrupt ? "true" : "false");
    std::printf("    extended l2: %s\n", q->extended_l2 ? "true" : "false");
  }
  return 0;
}

}  // namespace

void add_info(CLI::App& app, int& status) {
  auto args = std::make_shared<InfoArgs>();
  auto* cmd = app.add_subcommand("info", "show an image's format and sizes");
  cmd->add_option("--output", args->output, "human or json")->check(CLI::IsMember({"human", "json"}));
  cmd->add_flag("-U,--force-share", args->force_share, "accepted for qemu-img compatibility");
  cmd->add_option("file", args->file)->required();
  cmd->callback([args, &status] { status = run_info(*args); });
}

}  // namespace tern::img

// tern-img check [-r leaks|all] [--output human|json] FILE: qemu-img
// check's verdicts and exit status (0 clean, 1 check not completed,
// 2 corruptions, 3 leaks only).
#include <cstdio>
#include <nlohmann/json.hpp>

#include "block/image.h"
#include "tools/tern_img/verbs.h"

namespace tern::img {
namespace {

using block::CheckResult;
using block::Repair;

struct CheckArgs {
  std::string file;
  std::string repair;
  std::string output = "human";
};

int verdict(const CheckResult& r) {
  if (r.incomplete) return 1;
  if (r.corruptions > r.corruptions_fixed) return 2;
  if (r.leaks > r.leaks_fixed) return 3;
  return 0;
}

void print_human(const CheckResult& r) {
  for (const auto& m : r.messages) std::fprintf(stderr, "%s\n", m.c_str());
  uint64_t errors = r.corruptions - r.corruptions_fixed;
  uint64_t leaks = r.leaks - r.leaks_fixed;
  if (r.incomplete) std::printf("\nThe check could not be completed.\n");
  if (errors == 0 && leaks == 0 && !r.incomplete) std::printf("No errors were found on the image.\n");
  if (errors > 0) {
    std::printf("\n%llu errors were found on the image.\n", static_cast<unsigned long long>(errors));
    std::printf("Data may be corrupted, or further writes to the image may corrupt it.\n");
  }
  if (leaks > 0) {
    std::printf("\n%llu leaked clusters were found on the image.\n", static_cast<unsigned long long>(leaks));
    std::printf("This means waste of disk space, but no harm to data.\n");
  }
  if (r.total_clusters > 0) {
    auto pct = [&](uint64_t n) { return 100.0 * static_cast<double>(n) / static_cast<double>(r.total_clusters); };
    std::printf("%llu/%llu = %.2f%% allocated, %.2f%% fragmented, %.2f%% compressed clusters\n",
                static_cast<unsigned long long>(r.allocated_clusters),
                static_cast<unsigned long long>(r.total_clusters), pct(r.allocated_clusters),
                pct(r.fragmented_clusters), pct(r.compressed_clusters));
  }
  std::printf("Image end offset: %llu\n", static_cast<unsigned long long>(r.image_end_offset));
}

void print_json(const std::string& file, const CheckResult& r, const CheckResult* fixed) {
  nlohmann::ordered_json j;
  j["image-end-offset"] = r.image_end_offset;
  j["total-clusters"] = r.total_clusters;
  if (r.corruptions > 0) j["corruptions"] = r.corruptions;
  j["check-errors"] = r.incomplete ? 1 : 0;
  if (r.leaks > 0) j["leaks"] = r.leaks;
  if (fixed && fixed->leaks_fixed > 0) j["leaks-fixed"] = fixed->leaks_fixed;
  if (fixed && fixed->corruptions_fixed > 0) j["corruptions-fixed"] = fixed->corruptions_fixed;
  j["allocated-clusters"] = r.allocated_clusters;
  j["filename"] = file;
  j["format"] = "qcow2";
  if (r.fragmented_clusters > 0) j["fragmented-clusters"] = r.fragmented_clusters;
  if (r.compressed_clusters > 0) j["compressed-clusters"] = r.compressed_clusters;
  std::printf("%s\n", j.dump(4).c_str());
}

int run_check(const CheckArgs& a) {
  Repair repair = a.repair == "all" ? Repair::All : a.repair == "leaks" ? Repair::Leaks : Repair::None;
  auto image = block::ImageCheck::open(a.file, repair);
  if (!image) {
    std::fprintf(stderr, "tern-img: check: %s\n", image.error().message().c_str());
    return 1;
  }
  auto first = image->check(repair);
  if (!first) {
    std::fprintf(stderr, "tern-img: check: %s\n", first.error().message().c_str());
    return 1;
  }
  CheckResult result = *first;
  if (repair != Repair::None && (first->leaks_fixed > 0 || first->corruptions_fixed > 0)) {
    if (a.output == "human") {
      std::printf("The following inconsistencies were found and repaired:\n\n");
      std::printf("    %llu leaked clusters\n    %llu corruptions\n\n",
                  static_cast<unsigned long long>(first->leaks_fixed),
                  static_cast<unsigned long long>(first->corruptions_fixed));
      std::printf("Double checking the fixed image now...\n");
    }
    auto again = image->check(Repair::None);
    if (!again) {
      std::fprintf(stderr, "tern-img: check: %s\n", again.error().message().c_str());
      return 1;
    }
    result = *again;
  }
  if (auto r = image->close(); !r) {
    std::fprintf(stderr, "tern-img: check: %s\n", r.error().message().c_str());
    return 1;
  }
  if (a.output == "json") {
    print_json(a.file, result, repair != Repair::None ? &*first : nullptr);
  } else {
    print_human(result);
  }
  return verdict(result);
}

}  // namespace

void add_check(CLI::App& app, int& status) {
  auto args = std::make_shared<CheckArgs>();
  auto* cmd = app.add_subcommand("check", "check (and repair) a qcow2 image's refcounts");
  cmd->add_option("-r", args->repair, "repair leaks or all")->check(CLI::IsMember({"leaks", "all"}));
  cmd->add_option("--output", args->output, "human or json")->check(CLI::IsMember({"human", "json"}));
  cmd->add_option("file", args->file)->required();
  cmd->callback([args, &status] { status = run_check(*args); });
}

}  // namespace tern::img

// Engine::check: recomputes every cluster's refcount from the metadata that
// references it (header, L1, L2 tables, data and compressed clusters,
// refcount table and blocks) and compares with the stored refcounts, as
// `qemu-img check` does; with repair, fixes what it may. Also the refcount
// rebuild after an unclean close (dirty bit).
#include <algorithm>
#include <cstdio>
#include <map>

#include "block/qcow2/big_endian.h"
#include "block/qcow2/engine.h"

namespace tern::block::qcow2 {
namespace {
constexpr uint64_t kTableOffsetMask = ~uint64_t{0x1ff};
}  // namespace

Result<CheckResult> Engine::check(Repair repair) {
  compressed_cursor_ = 0;  // a repair may rewrite any refcount
  CheckResult res;
  const Header& h = header_.get();
  if (h.nb_snapshots > 0) {
    res.incomplete = true;
    res.messages.push_back("internal snapshots are not checked");
    return res;
  }
  if (repair != Repair::None && options_.read_only) return fail(Errc::ReadOnly);
  // Settle the caches first so what is checked is what is on disk.
  if (!options_.read_only) {
    if (auto r = flush_metadata(); !r) return std::unexpected(r.error());
  }
  auto file_size = file_->size();
  if (!file_size) return std::unexpected(file_size.error());
  const uint64_t cs = cluster_size_;
  const uint64_t file_clusters = (*file_size + cs - 1) >> cluster_bits_;
  const uint64_t n = file_clusters;
  res.total_clusters = (h.size + cs - 1) >> cluster_bits_;
  // One counter per cluster of the file as it really is: memory bounded by
  // the file's size, whatever the header claims.
  std::vector<uint32_t> expected(n, 0);
  // Findings are counted; only the first kMaxCheckMessages are kept as text
  // (a hostile image can hold millions of bad entries).
  auto note = [&](std::string text) {
    if (res.messages.size() < kMaxCheckMessages) {
      res.messages.push_back(std::move(text));
    } else {
      ++res.messages_dropped;
    }
  };
  auto error = [&](std::string text, uint64_t times = 1) {
    res.corruptions += times;
    note("ERROR " + std::move(text) + (times > 1 ? " (" + std::to_string(times) + " times)" : ""));
  };
  // Counts `times` references to the cluster holding `offset`.
  auto ref = [&](uint64_t offset, const char* what, uint64_t times = 1) {
    uint64_t c = offset >> cluster_bits_;
    if (c >= file_clusters) {
      error(std::string(what) + " at offset " + std::to_string(offset) + " is past the end of the image", times);
      return;
    }
    expected[c] = static_cast<uint32_t>(std::min<uint64_t>(UINT32_MAX, expected[c] + times));
  };

  ref(0, "header");
  const uint64_t l1_bytes = uint64_t{h.l1_size} * 8;
  for (uint64_t off = 0; off < l1_bytes; off += cs) ref(h.l1_table_offset + off, "L1 table");
  uint64_t previous_host = 0;
  std::vector<uint8_t> l2(cs);
  // Each distinct L2 table is read once, its references weighted by how
  // many L1 entries name it: the work is bounded by the tables the file
  // can hold, not by l1_size times the entries per table.
  std::map<uint64_t, uint64_t> tables;  // offset -> L1 entries naming it
  std::vector<uint64_t> table_order;    // distinct tables, in L1 order
  for (uint64_t i = 0; i < h.l1_size; ++i) {
    uint64_t table = l1_entry(i) & kOffsetMask;
    if (table == 0) continue;
    if (table & (cs - 1)) {
      error("L2 table offset " + std::to_string(table) + " is not cluster aligned");
      continue;
    }
    ref(table, "L2 table");
    if ((table >> cluster_bits_) >= file_clusters) continue;
    if (tables[table]++ == 0) table_order.push_back(table);
  }
  for (uint64_t table : table_order) {
    const uint64_t times = tables[table];
    auto data = l2_cache_.get(table);
    if (!data) return std::unexpected(data.error());
    std::copy_n(*data, cs, l2.begin());
    for (uint64_t j = 0; j < cs / 8; ++j) {
      uint64_t entry = load_be<uint64_t>(l2.data() + j * 8);
      if (entry & kOflagCompressed) {
        const auto d = CompressedDescriptor::decode(entry, cluster_bits_);
        for (uint64_t c = d.first_cluster(cluster_bits_); c <= d.last_cluster(cluster_bits_); ++c) {
          ref(c << cluster_bits_, "compressed cluster", times);
        }
        res.allocated_clusters += times;
        res.compressed_clusters += times;
        continue;
      }
      uint64_t host = entry & kOffsetMask;
      if (host == 0) continue;
      if (host & (cs - 1)) {
        error("data cluster offset " + std::to_string(host) + " is not cluster aligned", times);
        continue;
      }
      ref(host, "data cluster", times);
      res.allocated_clusters += times;
      if (previous_host != 0 && host != previous_host + cs) ++res.fragmented_clusters;
      previous_host = host;
    }
  }
  const uint64_t rt_bytes = uint64_t{h.refcount_table_clusters} << cluster_bits_;
  for (uint64_t off = 0; off < rt_bytes; off += cs) ref(h.refcount_table_offset + off, "refcount table");
  {
    std::vector<uint8_t> table(rt_bytes);
    if (auto r = file_->read_at(h.refcount_table_offset, table); !r) {
      return fail(Errc::ReadingMetadata, r.error().sys_errno, "refcount table");
    }
    for (uint64_t i = 0; i < rt_bytes / 8; ++i) {
      uint64_t block = load_be<uint64_t>(table.data() + i * 8) & kTableOffsetMask;
      if (block == 0) continue;
      if (block & (cs - 1)) {
        error("refcount block offset " + std::to_string(block) + " is not cluster aligned");
        continue;
      }
      ref(block, "refcount block");
    }
  }

  // Stored against computed refcounts, within the file as qemu-img does:
  // more than referenced is a leak, fewer is an error.
  bool changed = false;
  for (uint64_t c = 0; c < file_clusters; ++c) {
    auto stored = refcounts_->get(c << cluster_bits_);
    if (!stored) return std::unexpected(stored.error());
    uint64_t want = expected[c];
    uint64_t now = *stored;
    if (now != want) {
      std::string line = "cluster " + std::to_string(c) + " refcount=" + std::to_string(now) +
                         " reference=" + std::to_string(want);
      bool leak = now > want;
      if (leak) {
        ++res.leaks;
        note("Leaked " + line);
      } else {
        error(line);
      }
      if (repair == Repair::All || (leak && repair == Repair::Leaks)) {
        if (auto r = refcounts_->set(c << cluster_bits_, want); !r) return std::unexpected(r.error());
        ++(leak ? res.leaks_fixed : res.corruptions_fixed);
        now = want;
        changed = true;
      }
    }
    if (now != 0) res.image_end_offset = (c + 1) << cluster_bits_;
  }

  // qcow2.txt: OFLAG_COPIED is set exactly when the refcount is 1.
  for (uint64_t i = 0; i < h.l1_size; ++i) {
    uint64_t entry = l1_entry(i);
    uint64_t table = entry & kOffsetMask;
    if (table == 0 || (table & (cs - 1)) || (table >> cluster_bits_) >= file_clusters) continue;
    auto rc = refcounts_->get(table);
    if (!rc) return std::unexpected(rc.error());
    if (((entry & kOflagCopied) != 0) != (*rc == 1)) {
      error("OFLAG_COPIED L2 cluster: l1_index=" + std::to_string(i) + " refcount=" + std::to_string(*rc));
      if (repair == Repair::All) {
        set_l1_entry(i, *rc == 1 ? (entry | kOflagCopied) : (entry & ~kOflagCopied));
        ++res.corruptions_fixed;
        changed = true;
      }
    }
  }
  for (uint64_t table : table_order) {
    for (uint64_t j = 0; j < cs / 8; ++j) {
      auto data = l2_cache_.get(table);
      if (!data) return std::unexpected(data.error());
      uint64_t e = load_be<uint64_t>(*data + j * 8);
      uint64_t host = e & kOffsetMask;
      if ((e & kOflagCompressed) || host == 0 || (host & (cs - 1)) || (host >> cluster_bits_) >= file_clusters) {
        continue;
      }
      auto drc = refcounts_->get(host);
      if (!drc) return std::unexpected(drc.error());
      if (((e & kOflagCopied) != 0) == (*drc == 1)) continue;
      char hex[32];
      std::snprintf(hex, sizeof hex, "%llx", static_cast<unsigned long long>(e));
      error("OFLAG_COPIED data cluster: l2_entry=" + std::string(hex) + " refcount=" + std::to_string(*drc));
      if (repair != Repair::All) continue;
      data = l2_cache_.get(table);
      if (!data) return std::unexpected(data.error());
      store_be<uint64_t>(*data + j * 8, *drc == 1 ? (e | kOflagCopied) : (e & ~kOflagCopied));
      l2_cache_.mark_dirty(table);
      ++res.corruptions_fixed;
      changed = true;
    }
  }
  if (res.messages_dropped > 0) {
    res.messages.push_back(std::to_string(res.messages_dropped) + " more findings not listed");
  }
  if (changed) {
    if (auto r = flush(); !r) return std::unexpected(r.error());
  }
  Header& hw = header_.get();
  if (repair == Repair::All && (hw.incompatible_features & kIncompatCorrupt) &&
      res.corruptions == res.corruptions_fixed) {
    hw.incompatible_features &= ~kIncompatCorrupt;  // repaired
    if (auto r = header_.commit(); !r) return std::unexpected(r.error());
  }
  return res;
}

// After an unclean close: repair everything, then make sure nothing is left.
Result<void> Engine::rebuild_refcounts() {
  for (int pass = 0; pass < 3; ++pass) {
    auto res = check(Repair::All);
    if (!res) return std::unexpected(res.error());
    if (res->incomplete) return fail(Errc::Unsupported, 0, "rebuilding refcounts of images with snapshots");
    uint64_t left = (res->corruptions - res->corruptions_fixed) + (res->leaks - res->leaks_fixed);
    if (left != 0) {
      return std::unexpected(header_.mark_corrupt("refcount rebuild could not repair the image"));
    }
    if (res->corruptions == 0 && res->leaks == 0) return {};
  }
  return std::unexpected(header_.mark_corrupt("refcount rebuild did not converge"));
}

}  // namespace tern::block::qcow2

namespace tern::block {

// ImageCheck (block/image.h): tern-img check's view of the engine.
ImageCheck::ImageCheck(std::unique_ptr<qcow2::Engine> engine) : engine_(std::move(engine)) {}
ImageCheck::ImageCheck(ImageCheck&&) noexcept = default;
ImageCheck& ImageCheck::operator=(ImageCheck&&) noexcept = default;
ImageCheck::~ImageCheck() = default;

Result<ImageCheck> ImageCheck::open(const std::string& path, Repair repair) {
  auto file = qcow2::open_host_file(path, repair == Repair::None);
  if (!file) return std::unexpected(file.error());
  qcow2::EngineOptions o;
  o.read_only = repair == Repair::None;
  o.allow_backing = true;
  o.repair = true;  // a corrupt image opens writable, to be repaired
  auto engine = qcow2::Engine::open(std::move(*file), path, o);
  if (!engine) return std::unexpected(engine.error());
  return ImageCheck(std::move(*engine));
}

Result<CheckResult> ImageCheck::check(Repair repair) { return engine_->check(repair); }

Result<void> ImageCheck::close() { return engine_->close(); }

}  // namespace tern::block

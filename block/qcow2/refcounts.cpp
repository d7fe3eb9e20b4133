#include "block/qcow2/refcounts.h"

#include <algorithm>
#include <cstdlib>

#include "block/qcow2/big_endian.h"

namespace tern::block::qcow2 {
namespace {
// Refcount table entries: bits 9-63 are the block offset, 0-8 reserved.
constexpr uint64_t kTableOffsetMask = ~uint64_t{0x1ff};
}  // namespace

Refcounts::Refcounts(HostFile& file, HeaderStore& header, size_t cache_tables)
    : file_(file),
      header_(header),
      cluster_bits_(header.get().cluster_bits),
      order_(header.get().refcount_order),
      block_bits_(cluster_bits_ + 3 - order_),
      max_(order_ == 6 ? ~uint64_t{0} : (uint64_t{1} << (1u << order_)) - 1),
      blocks_(file, size_t{1} << cluster_bits_, cache_tables, Errc::ReadingMetadata,
              Errc::WritingMetadata) {}

Result<std::unique_ptr<Refcounts>> Refcounts::load(HostFile& file, HeaderStore& header,
                                                   uint64_t file_size, size_t cache_tables) {
  std::unique_ptr<Refcounts> rc(new Refcounts(file, header, cache_tables));
  const Header& h = header.get();
  rc->table_.resize(static_cast<size_t>(h.refcount_table_clusters) << h.cluster_bits);
  if (auto r = file.read_at(h.refcount_table_offset, rc->table_); !r) {
    return fail(Errc::ReadingMetadata, r.error().sys_errno, "refcount table");
  }
  const uint64_t cs = h.cluster_size();
  rc->append_cluster_ = (file_size + cs - 1) >> h.cluster_bits;
  // Clusters past the end of the file may still carry refcounts (allocated
  // just before a crash); start appending after the last one so nothing in
  // use is handed out again. Only near the end, though: refcounts far past
  // it are garbage, and a hostile image must not make us grow the file
  // (or the checker's tables) to a size it merely claims.
  const uint64_t file_clusters = rc->append_cluster_;
  const uint64_t plausible_end = 2 * file_clusters + 1024;
  uint64_t first_table_index = rc->append_cluster_ >> rc->block_bits_;
  for (uint64_t t = first_table_index; t < rc->table_entries(); ++t) {
    if ((t << rc->block_bits_) >= plausible_end) break;
    uint64_t block = load_be<uint64_t>(rc->table_.data() + t * 8) & kTableOffsetMask;
    if (block == 0 || (block >> h.cluster_bits) >= file_clusters) continue;
    auto data = rc->blocks_.get(block);
    if (!data) return std::unexpected(data.error());
    uint64_t per_block = uint64_t{1} << rc->block_bits_;
    for (uint64_t i = 0; i < per_block; ++i) {
      uint64_t cluster = (t << rc->block_bits_) + i;
      if (cluster >= rc->append_cluster_ && cluster < plausible_end && rc->read_entry(*data, i) != 0) {
        rc->append_cluster_ = cluster + 1;
      }
    }
  }
  return rc;
}

uint64_t Refcounts::read_entry(const uint8_t* block, uint32_t order, uint64_t index) {
  switch (order) {
    case 0: case 1: case 2: {
      uint32_t bits = 1u << order;
      uint64_t bit = index * bits;
      return (block[bit / 8] >> (bit % 8)) & ((1u << bits) - 1);
    }
    case 3: return block[index];
    case 4: return load_be<uint16_t>(block + index * 2);
    case 5: return load_be<uint32_t>(block + index * 4);
    default: return load_be<uint64_t>(block + index * 8);
  }
}

void Refcounts::write_entry(uint8_t* block, uint32_t order, uint64_t index, uint64_t value) {
  switch (order) {
    case 0: case 1: case 2: {
      uint32_t bits = 1u << order;
      uint64_t bit = index * bits;
      uint8_t mask = static_cast<uint8_t>(((1u << bits) - 1) << (bit % 8));
      uint8_t& byte = block[bit / 8];
      byte = static_cast<uint8_t>((byte & ~mask) | ((value << (bit % 8)) & mask));
      return;
    }
    case 3: block[index] = static_cast<uint8_t>(value); return;
    case 4: store_be<uint16_t>(block + index * 2, static_cast<uint16_t>(value)); return;
    case 5: store_be<uint32_t>(block + index * 4, static_cast<uint32_t>(value)); return;
    default: store_be<uint64_t>(block + index * 8, value); return;
  }
}

// The offset of the refcount block for `table_index`, 0 when it does not
// exist and `create` is false.
Result<uint64_t> Refcounts::block_for(uint64_t table_index, bool create) {
  if (table_index >= table_entries()) {
    if (!create) return 0;
    if (auto r = grow_table(table_index); !r) return std::unexpected(r.error());
  }
  uint64_t raw = load_be<uint64_t>(table_.data() + table_index * 8);
  uint64_t block = raw & kTableOffsetMask;
  if (block != 0) {
    if ((block & ((uint64_t{1} << cluster_bits_) - 1)) != 0) {
      return std::unexpected(header_.mark_corrupt("unaligned refcount block offset " + std::to_string(block)));
    }
    if (block >= end()) {
      return std::unexpected(header_.mark_corrupt("refcount block offset " + std::to_string(block) +
                                                  " past the end of the image"));
    }
    return block;
  }
  if (!create) return 0;
  // A new block goes at the end of the file. When it lies in the range it
  // describes it counts itself; otherwise its own refcount lives in another
  // block, found (or made) the same way.
  uint64_t cluster = take_clusters(1);
  block = cluster << cluster_bits_;
  if (auto r = blocks_.create(block); !r) return std::unexpected(r.error());
  store_be<uint64_t>(table_.data() + table_index * 8, block);
  table_dirty_ = true;
  if ((cluster >> block_bits_) == table_index) {
    auto data = blocks_.get(block);
    if (!data) return std::unexpected(data.error());
    write_entry(*data, cluster & ((uint64_t{1} << block_bits_) - 1), 1);
    blocks_.mark_dirty(block);
  } else if (auto r = adjust(block, +1); !r) {
    return std::unexpected(r.error());
  }
  return block;
}

Result<void> Refcounts::grow_table(uint64_t min_index) {
  Header& h = header_.get();
  const uint64_t cs = uint64_t{1} << cluster_bits_;
  const uint64_t old_offset = h.refcount_table_offset;
  const uint64_t old_clusters = h.refcount_table_clusters;
  // Size the new table so that it also covers itself and the blocks that
  // will describe it, placed right after it.
  uint64_t clusters = std::max<uint64_t>(old_clusters * 2, ((min_index + 1) * 8 + cs - 1) / cs);
  for (;;) {
    uint64_t last_cluster = append_cluster_ + clusters + 2 * (clusters + 2);
    uint64_t needed = std::max(min_index, last_cluster >> block_bits_) + 1;
    if (clusters * cs / 8 >= needed) break;
    clusters = (needed * 8 + cs - 1) / cs;
  }
  if (clusters * cs > kMaxRefcountTableBytes) {
    return fail(Errc::NoSpace, 0, "refcount table would exceed its maximum size");
  }
  uint64_t new_offset = take_clusters(clusters) << cluster_bits_;
  table_.resize(clusters * cs, 0);
  table_dirty_ = true;
  h.refcount_table_offset = new_offset;
  h.refcount_table_clusters = static_cast<uint32_t>(clusters);
  for (uint64_t i = 0; i < clusters; ++i) {
    if (auto r = adjust(new_offset + i * cs, +1); !r) return std::unexpected(r.error());
  }
  // The new table and every block it names reach the disk before the
  // header points at it; only then is the old table released.
  if (auto r = flush(); !r) return r;
  if (auto r = file_.sync(); !r) return fail(Errc::WritingMetadata, r.error().sys_errno);
  if (auto r = header_.commit(); !r) return r;
  for (uint64_t i = 0; i < old_clusters; ++i) {
    if (auto r = adjust(old_offset + i * cs, -1); !r) return std::unexpected(r.error());
  }
  return {};
}

Result<uint64_t> Refcounts::get(uint64_t host_offset) {
  uint64_t cluster = host_offset >> cluster_bits_;
  auto block = block_for(cluster >> block_bits_, false);
  if (!block) return std::unexpected(block.error());
  if (*block == 0) return 0;
  auto data = blocks_.get(*block);
  if (!data) return std::unexpected(data.error());
  return read_entry(*data, cluster & ((uint64_t{1} << block_bits_) - 1));
}

Result<uint64_t> Refcounts::adjust(uint64_t host_offset, int delta) {
  uint64_t cluster = host_offset >> cluster_bits_;
  auto block = block_for(cluster >> block_bits_, delta > 0);
  if (!block) return std::unexpected(block.error());
  if (*block == 0) {
    // Releasing a cluster no refcount block describes: a refcount index
    // outside the refcount table is corruption, as QEMU marks it.
    return std::unexpected(header_.mark_corrupt("refcount of cluster at " + std::to_string(host_offset) +
                                                " is outside the refcount table"));
  }
  auto data = blocks_.get(*block);
  if (!data) return std::unexpected(data.error());
  uint64_t index = cluster & ((uint64_t{1} << block_bits_) - 1);
  uint64_t value = read_entry(*data, index);
  uint64_t next;
  if (delta > 0) {
    if (value == max_) {
      return fail(Errc::RefcountOverflow, 0,
                  "cluster at " + std::to_string(host_offset) + ": value " + std::to_string(value) +
                      "+1 exceeds maximum " + std::to_string(max_) + " of " +
                      std::to_string(1u << order_) + "-bit refcounts");
    }
    next = value + 1;
  } else {
    if (value == 0) {
      return std::unexpected(header_.mark_corrupt("refcount of cluster at " + std::to_string(host_offset) +
                                                  " would drop below zero"));
    }
    next = value - 1;
  }
  write_entry(*data, index, next);
  blocks_.mark_dirty(*block);
  if (next == 0) freed(cluster);
  return next;
}

Result<void> Refcounts::set(uint64_t host_offset, uint64_t value) {
  if (value > max_) {
    return fail(Errc::RefcountOverflow, 0,
                "cluster at " + std::to_string(host_offset) + ": value " + std::to_string(value) +
                    " exceeds maximum " + std::to_string(max_) + " of " + std::to_string(1u << order_) +
                    "-bit refcounts");
  }
  uint64_t cluster = host_offset >> cluster_bits_;
  auto block = block_for(cluster >> block_bits_, value != 0);
  if (!block) return std::unexpected(block.error());
  if (*block == 0) return {};  // no block: already 0
  auto data = blocks_.get(*block);
  if (!data) return std::unexpected(data.error());
  const uint64_t index = cluster & ((uint64_t{1} << block_bits_) - 1);
  const uint64_t old = read_entry(*data, index);
  write_entry(*data, index, value);
  blocks_.mark_dirty(*block);
  if (value == 0 && old != 0) freed(cluster);
  // Repair gave a held cluster a reference again: it is in use, not free.
  if (value != 0 && held_until(cluster) != 0) unhold(cluster, cluster + 1);
  return {};
}

Result<uint64_t> Refcounts::allocate(uint64_t count, bool& fresh) {
  const uint64_t cs = uint64_t{1} << cluster_bits_;
  release_held();
  if (free_hint_ < append_cluster_) {
    uint64_t run_start = free_hint_;
    uint64_t run = 0;
    for (uint64_t c = free_hint_; c < append_cluster_; ++c) {
      if (uint64_t until = held_until(c); until != 0) {
        // Freed, but a transfer that may still land on it is out.
        run = 0;
        run_start = until;
        c = until - 1;
        continue;
      }
      auto value = get(c << cluster_bits_);
      if (!value) return std::unexpected(value.error());
      if (*value != 0) {
        run = 0;
        run_start = c + 1;
        if (run_start > free_hint_ && c == free_hint_) free_hint_ = c + 1;
        continue;
      }
      if (++run == count) {
        for (uint64_t i = 0; i < count; ++i) {
          if (auto r = adjust((run_start + i) * cs, +1); !r) return std::unexpected(r.error());
        }
        fresh = false;
        return run_start * cs;
      }
    }
    free_hint_ = append_cluster_;
  }
  uint64_t first = take_clusters(count);
  for (uint64_t i = 0; i < count; ++i) {
    if (auto r = adjust((first + i) * cs, +1); !r) return std::unexpected(r.error());
  }
  fresh = true;
  return first * cs;
}

void Refcounts::freed(uint64_t cluster) {
  // Transfers mapped before this moment hold tickets below `tag`; one of
  // them may target this cluster (a write still queued for Linux AIO, or
  // running on another queue outside the lock). Until all are back, the
  // cluster must not become an L2 table, a refcount block or another
  // guest's data: the late transfer would overwrite it.
  if (transfers_ != nullptr) {
    const uint64_t tag = transfers_->issued();
    if (transfers_->oldest_in_flight() < tag) {
      if (held_until(cluster) != 0) return;  // already held (see set())
      if (!held_order_.empty() && held_order_.back().tag == tag && held_order_.back().end == cluster) {
        ++held_order_.back().end;
      } else {
        held_order_.push_back(HeldRun{tag, cluster, cluster + 1});
      }
      uint64_t first = cluster;
      uint64_t end = cluster + 1;
      auto next = held_.find(end);
      if (next != held_.end()) {
        end = next->second;
        held_.erase(next);
      }
      auto it = held_.lower_bound(cluster);
      if (it != held_.begin() && std::prev(it)->second == cluster) {
        --it;
        first = it->first;
        held_.erase(it);
      }
      held_.emplace(first, end);
      ++held_count_;
      return;
    }
  }
  free_hint_ = std::min(free_hint_, cluster);
}

void Refcounts::release_held() {
  if (held_order_.empty()) return;
  const uint64_t oldest = transfers_ ? transfers_->oldest_in_flight() : ~uint64_t{0};
  while (!held_order_.empty() && held_order_.front().tag <= oldest) {
    const HeldRun run = held_order_.front();
    held_order_.pop_front();
    unhold(run.first, run.end);
    free_hint_ = std::min(free_hint_, run.first);
  }
}

uint64_t Refcounts::held_until(uint64_t cluster) const {
  auto it = held_.upper_bound(cluster);
  if (it == held_.begin()) return 0;
  --it;
  return it->second > cluster ? it->second : 0;
}

void Refcounts::unhold(uint64_t first, uint64_t end) {
  auto it = held_.upper_bound(first);
  if (it != held_.begin()) --it;
  while (it != held_.end() && it->first < end) {
    const uint64_t s = it->first;
    const uint64_t e = it->second;
    if (e <= first) {
      ++it;
      continue;
    }
    it = held_.erase(it);
    held_count_ -= std::min(e, end) - std::max(s, first);
    if (s < first) held_.emplace(s, first);
    if (e > end) {
      held_.emplace(end, e);
      break;
    }
  }
}

Result<void> Refcounts::flush() {
  if (auto r = blocks_.flush(); !r) return r;
  if (table_dirty_) {
    if (auto r = file_.write_at(header_.get().refcount_table_offset, table_); !r) {
      return fail(Errc::WritingMetadata, r.error().sys_errno, "refcount table");
    }
    table_dirty_ = false;
  }
  return {};
}

}  // namespace tern::block::qcow2

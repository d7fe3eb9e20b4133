// Refcounts: the refcount table and refcount blocks (qcow2.txt, "Host
// cluster management"), widths 1..64 bits (refcount_order 0..6; sub-byte
// widths packed least significant bits first), and the cluster allocator,
// which grows refcount blocks and the refcount table as the file grows.
//
// Not thread-safe; the engine's caller serializes it.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <vector>

#include "block/error.h"
#include "block/qcow2/header_store.h"
#include "block/qcow2/host_file.h"
#include "block/qcow2/table_cache.h"
#include "block/qcow2/transfers.h"

namespace tern::block::qcow2 {

class Refcounts {
 public:
  [[nodiscard]] static Result<std::unique_ptr<Refcounts>> load(HostFile& file, HeaderStore& header,
                                                               uint64_t file_size,
                                                               size_t cache_tables);

  // A cluster whose refcount drops to 0 while a data transfer mapped
  // before that moment is still out (transfers.h) is held back: allocate()
  // hands it out again only once every such transfer is over. Without a
  // tracker (tools, tests) freed clusters are reusable at once.
  void set_transfers(const TransferTracker* transfers) { transfers_ = transfers; }
  // Clusters held back now.
  uint64_t held_clusters() const { return held_count_; }

  [[nodiscard]] Result<uint64_t> get(uint64_t host_offset);
  // +1 or -1 on the cluster containing host_offset. Going above the width's
  // maximum is RefcountOverflow; going below zero is CorruptImage.
  [[nodiscard]] Result<uint64_t> adjust(uint64_t host_offset, int delta);
  // Sets a refcount outright (check and repair); above the maximum is
  // RefcountOverflow.
  [[nodiscard]] Result<void> set(uint64_t host_offset, uint64_t value);
  // `count` contiguous clusters with refcount 1. `fresh` tells whether they
  // come from past the old end of the file, so read as zeros until written.
  [[nodiscard]] Result<uint64_t> allocate(uint64_t count, bool& fresh);
  // Writes dirty refcount blocks, then the table if it changed.
  [[nodiscard]] Result<void> flush();
  // First byte past every cluster handed out so far.
  uint64_t end() const { return append_cluster_ << cluster_bits_; }
  uint64_t max_refcount() const { return max_; }
  // Whether `host_offset` is a refcount block we hold in the cache.
  bool is_cached_block(uint64_t host_offset) const { return blocks_.contains(host_offset); }

  // Entry `index` of a refcount block in on-disk form, for a given order.
  static uint64_t read_entry(const uint8_t* block, uint32_t order, uint64_t index);
  static void write_entry(uint8_t* block, uint32_t order, uint64_t index, uint64_t value);

 private:
  Refcounts(HostFile& file, HeaderStore& header, size_t cache_tables);
  Result<uint64_t> block_for(uint64_t table_index, bool create);
  Result<void> grow_table(uint64_t min_index);
  uint64_t read_entry(const uint8_t* block, uint64_t index) const {
    return read_entry(block, order_, index);
  }
  void write_entry(uint8_t* block, uint64_t index, uint64_t value) const {
    write_entry(block, order_, index, value);
  }
  uint64_t take_clusters(uint64_t count) {
    uint64_t first = append_cluster_;
    append_cluster_ += count;
    return first;
  }
  uint64_t table_entries() const { return table_.size() / 8; }
  // The refcount of `cluster` just dropped to 0.
  void freed(uint64_t cluster);
  // Gives held clusters whose transfers are all over back to the allocator.
  void release_held();
  // The end of the held run containing `cluster`, or 0 when it is not held.
  uint64_t held_until(uint64_t cluster) const;
  void unhold(uint64_t first, uint64_t end);

  HostFile& file_;
  HeaderStore& header_;
  uint32_t cluster_bits_;
  uint32_t order_;
  uint32_t block_bits_;  // log2(entries per refcount block)
  uint64_t max_;
  std::vector<uint8_t> table_;  // on-disk (big-endian) form
  bool table_dirty_ = false;
  TableCache blocks_;
  uint64_t append_cluster_ = 0;  // first cluster never handed out
  uint64_t free_hint_ = 0;       // no free cluster below this one
  const TransferTracker* transfers_ = nullptr;
  // Held clusters: runs in the order they were freed, each with the first
  // ticket not yet issued when it was freed (release once oldest_in_flight()
  // reaches it), and the same clusters as disjoint [first, end) runs for
  // the allocator's scan. One entry per run of contiguous clusters freed
  // together, so a large discard costs one entry, not one per cluster.
  struct HeldRun {
    uint64_t tag;
    uint64_t first;
    uint64_t end;
  };
  std::deque<HeldRun> held_order_;
  std::map<uint64_t, uint64_t> held_;  // first cluster -> end
  uint64_t held_count_ = 0;
};

}  // namespace tern::block::qcow2

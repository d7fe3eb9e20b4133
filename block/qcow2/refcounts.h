// Refcounts: the refcount table and refcount blocks (qcow2.txt, "Host
// cluster management"), widths 1..64 bits (refcount_order 0..6; sub-byte
// widths packed least significant bits first), and the cluster allocator,
// which grows refcount blocks and the refcount table as the file grows.
//
// Not thread-safe; the engine's caller serializes it.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "block/error.h"
#include "block/qcow2/header_store.h"
#include "block/qcow2/host_file.h"
#include "block/qcow2/table_cache.h"

namespace tern::block::qcow2 {

class Refcounts {
 public:
  [[nodiscard]] static Result<std::unique_ptr<Refcounts>> load(HostFile& file, HeaderStore& header,
                                                               uint64_t file_size,
                                                               size_t cache_tables);

  // Freed clusters are handed out again only while this returns true (the
  // disk returns false while data I/O mapped before a free may be in flight).
  void set_reuse_allowed(std::function<bool()> allowed) { reuse_allowed_ = std::move(allowed); }

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
  std::function<bool()> reuse_allowed_;
};

}  // namespace tern::block::qcow2

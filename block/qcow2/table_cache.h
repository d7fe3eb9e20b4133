// TableCache: a bounded LRU cache of cluster-sized metadata tables (L2 tables
// or refcount blocks) kept in their on-disk, big-endian form so that write
// back needs no conversion or copy. Evicting a dirty table writes it first.
//
// Not thread-safe, except peek(): the engine's caller holds its mapping
// lock exclusively around every other call, and shared around peek() only
// (docs/qcow2.md, "Concurrency"). A pointer returned by get()/create()/
// peek() stays valid until the next get() or create() on the same cache
// (which may evict it).
#pragma once

#include <cstdint>
#include <functional>
#include <list>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "block/error.h"
#include "block/qcow2/host_file.h"

namespace tern::block::qcow2 {

class TableCache {
 public:
  // `before_write` runs before any dirty table of this cache is written
  // (the L2 cache uses it to write refcounts first).
  TableCache(HostFile& file, size_t table_bytes, size_t capacity, Errc read_error,
             Errc write_error);

  void set_before_write(std::function<Result<void>()> hook) { before_write_ = std::move(hook); }

  [[nodiscard]] Result<uint8_t*> get(uint64_t offset);
  // A new zero-filled table at `offset`, dirty, without reading the file.
  [[nodiscard]] Result<uint8_t*> create(uint64_t offset);
  // A table already in the cache, or nullptr: never reads, evicts or
  // writes, so calls may run concurrently with each other (nothing else
  // may). Moves the table to the front of the LRU under touch_mutex_.
  [[nodiscard]] const uint8_t* peek(uint64_t offset);
  void mark_dirty(uint64_t offset);
  // Writes every dirty table (the caller syncs).
  [[nodiscard]] Result<void> flush();
  // Drops a table whose cluster was freed, without writing it.
  void forget(uint64_t offset);
  bool contains(uint64_t offset) const { return index_.contains(offset); }
  bool has_dirty() const { return dirty_count_ > 0; }

 private:
  struct Entry {
    uint64_t offset;
    std::vector<uint8_t> data;
    bool dirty;
  };
  Result<void> make_room();
  Result<void> write(Entry& entry);

  HostFile& file_;
  size_t table_bytes_;
  size_t capacity_;
  Errc read_error_;
  Errc write_error_;
  std::function<Result<void>()> before_write_;
  std::list<Entry> lru_;  // front = most recently used
  // Orders peek()s' LRU moves among themselves; every other call runs
  // alone (see above), so needs no lock. A leaf: nothing is taken under it.
  std::mutex touch_mutex_;
  std::unordered_map<uint64_t, std::list<Entry>::iterator> index_;
  size_t dirty_count_ = 0;
};

}  // namespace tern::block::qcow2

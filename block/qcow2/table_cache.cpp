#include "block/qcow2/table_cache.h"

#include <algorithm>
#include <cstdlib>

namespace tern::block::qcow2 {

TableCache::TableCache(HostFile& file, size_t table_bytes, size_t capacity, Errc read_error,
                       Errc write_error)
    : file_(file),
      table_bytes_(table_bytes),
      capacity_(std::max<size_t>(capacity, 4)),
      read_error_(read_error),
      write_error_(write_error) {}

Result<void> TableCache::write(Entry& entry) {
  if (!entry.dirty) return {};
  if (before_write_) {
    if (auto r = before_write_(); !r) return r;
  }
  if (auto r = file_.write_at(entry.offset, entry.data); !r) {
    return fail(write_error_, r.error().sys_errno, "table at " + std::to_string(entry.offset));
  }
  entry.dirty = false;
  --dirty_count_;
  return {};
}

Result<void> TableCache::make_room() {
  while (lru_.size() >= capacity_) {
    Entry& victim = lru_.back();
    if (auto r = write(victim); !r) return r;
    index_.erase(victim.offset);
    lru_.pop_back();
  }
  return {};
}

Result<uint8_t*> TableCache::get(uint64_t offset) {
  if (auto it = index_.find(offset); it != index_.end()) {
    lru_.splice(lru_.begin(), lru_, it->second);
    return lru_.front().data.data();
  }
  if (auto r = make_room(); !r) return std::unexpected(r.error());
  std::vector<uint8_t> data(table_bytes_);
  if (auto r = file_.read_at(offset, data); !r) {
    return fail(read_error_, r.error().sys_errno, "table at " + std::to_string(offset));
  }
  lru_.push_front(Entry{offset, std::move(data), false});
  index_[offset] = lru_.begin();
  return lru_.front().data.data();
}

Result<uint8_t*> TableCache::create(uint64_t offset) {
  if (auto it = index_.find(offset); it != index_.end()) {
    // A freed table's cluster being reused: start over from zeros.
    lru_.splice(lru_.begin(), lru_, it->second);
    Entry& e = lru_.front();
    std::fill(e.data.begin(), e.data.end(), 0);
    if (!e.dirty) ++dirty_count_;
    e.dirty = true;
    return e.data.data();
  }
  if (auto r = make_room(); !r) return std::unexpected(r.error());
  lru_.push_front(Entry{offset, std::vector<uint8_t>(table_bytes_, 0), true});
  ++dirty_count_;
  index_[offset] = lru_.begin();
  return lru_.front().data.data();
}

const uint8_t* TableCache::peek(uint64_t offset) {
  // index_ only changes under the exclusive lock: concurrent finds are reads.
  auto it = index_.find(offset);
  if (it == index_.end()) return nullptr;
  std::lock_guard lock(touch_mutex_);
  lru_.splice(lru_.begin(), lru_, it->second);
  return it->second->data.data();
}

void TableCache::mark_dirty(uint64_t offset) {
  auto it = index_.find(offset);
  if (it == index_.end()) std::abort();  // invariant: callers mark what they just got
  if (!it->second->dirty) {
    it->second->dirty = true;
    ++dirty_count_;
  }
}

Result<void> TableCache::flush() {
  // Oldest first, which roughly follows allocation order.
  for (auto it = lru_.rbegin(); it != lru_.rend(); ++it) {
    if (auto r = write(*it); !r) return r;
  }
  return {};
}

void TableCache::forget(uint64_t offset) {
  auto it = index_.find(offset);
  if (it == index_.end()) return;
  if (it->second->dirty) --dirty_count_;
  lru_.erase(it->second);
  index_.erase(it);
}

}  // namespace tern::block::qcow2

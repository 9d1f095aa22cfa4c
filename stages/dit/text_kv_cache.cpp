#include "stages/dit/text_kv_cache.hpp"

#include <cstdlib>

namespace stagecraft {

TextKvCache::TextKvCache(size_t max_bytes) : max_bytes_(max_bytes) {}

size_t TextKvCache::budget_from_env() {
  if (const char* e = std::getenv("STAGECRAFT_TEXT_KV_CACHE_MB")) {
    char* end = nullptr;
    const long long mb = std::strtoll(e, &end, 10);
    if (end != e && *end == '\0' && mb >= 0) return static_cast<size_t>(mb) << 20;
  }
  return size_t(256) << 20;
}

std::shared_ptr<const TextKvCache::Rows> TextKvCache::find(const std::string& key) {
  std::lock_guard lk(mu_);
  auto it = index_.find(key);
  if (it == index_.end()) return nullptr;
  lru_.splice(lru_.begin(), lru_, it->second);
  return it->second->rows;
}

std::shared_ptr<const TextKvCache::Rows> TextKvCache::put(const std::string& key, Rows rows) {
  size_t bytes = key.size();
  for (const Tensor& t : rows) bytes += t.nbytes();
  auto shared = std::make_shared<const Rows>(std::move(rows));
  std::lock_guard lk(mu_);
  if (bytes > max_bytes_) return shared;  // would not fit even alone (or the cache is off)
  if (auto it = index_.find(key); it != index_.end()) {  // computed twice at once: keep one
    bytes_ -= it->second->bytes;
    lru_.erase(it->second);
    index_.erase(it);
  }
  while (!lru_.empty() && bytes_ + bytes > max_bytes_) {
    bytes_ -= lru_.back().bytes;
    index_.erase(lru_.back().key);
    lru_.pop_back();
  }
  lru_.push_front({key, shared, bytes});
  index_[key] = lru_.begin();
  bytes_ += bytes;
  return shared;
}

void TextKvCache::clear() {
  std::lock_guard lk(mu_);
  lru_.clear();
  index_.clear();
  bytes_ = 0;
}

size_t TextKvCache::bytes() const {
  std::lock_guard lk(mu_);
  return bytes_;
}

size_t TextKvCache::entries() const {
  std::lock_guard lk(mu_);
  return lru_.size();
}

}  // namespace stagecraft

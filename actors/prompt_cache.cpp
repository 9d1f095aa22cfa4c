#include "actors/prompt_cache.hpp"

namespace stagecraft::actors {

PromptCache::PromptCache(size_t capacity) : capacity_(capacity) {}

std::string PromptCache::key_for(const std::string& model, const Request& r) {
  // Length-prefixed fields so "ab"+"c" and "a"+"bc" never collide.
  std::string k;
  auto add = [&k](const std::string& s) {
    k += std::to_string(s.size());
    k += ':';
    k += s;
  };
  add(model);
  add(r.prompt);
  add(r.negative_prompt);
  // Guidance decides whether the negative prompt is encoded; an unset one (< 0) takes a
  // default the key cannot see, so it is a class of its own.
  k += r.guidance < 0 ? "default" : r.guidance <= 1.0f ? "nocfg" : "cfg";
  // The stage's run() checks the image size (and refuses sizes its model cannot make):
  // a hit must not skip that for a size it never saw.
  k += "|" + std::to_string(r.width) + "x" + std::to_string(r.height);
  return k;
}

std::optional<PromptCache::Entry> PromptCache::get(const std::string& key) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = index_.find(key);
  if (it == index_.end()) {
    ++misses_;
    return std::nullopt;
  }
  ++hits_;
  order_.splice(order_.begin(), order_, it->second);
  return it->second->second;
}

void PromptCache::put(const std::string& key, Entry entry) {
  if (capacity_ == 0) return;
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = index_.find(key);
  if (it != index_.end()) {
    it->second->second = std::move(entry);
    order_.splice(order_.begin(), order_, it->second);
    return;
  }
  order_.emplace_front(key, std::move(entry));
  index_[key] = order_.begin();
  while (order_.size() > capacity_) {
    index_.erase(order_.back().first);
    order_.pop_back();
  }
}

size_t PromptCache::size() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return order_.size();
}
uint64_t PromptCache::hits() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return hits_;
}
uint64_t PromptCache::misses() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return misses_;
}

}  // namespace stagecraft::actors

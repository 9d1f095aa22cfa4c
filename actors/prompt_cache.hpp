#pragma once
// An LRU of a stage's outputs keyed by everything they depend on: for the text
// encoder, the model, the exact prompt and negative prompt, whether guidance is on,
// and the image size (its run() checks the size, so a size it never saw must not
// hit another size's entry). A hit
// hands out the same tensors (shared storage, no copy); stages downstream
// only read them. Thread-safe, so a stage's replicas share one cache.
//
//   PromptCache cache(1024);
//   auto key = PromptCache::key_for("models/tiny", req);
//   if (auto hit = cache.get(key)) packet.tensors.insert(hit->begin(), hit->end());
//   else { run_encoder(packet); cache.put(key, {{"prompt_embeds", packet.tensor("prompt_embeds")}}); }
#include <cstdint>
#include <list>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

#include "core/packet.hpp"

namespace stagecraft::actors {

class PromptCache {
 public:
  using Entry = std::map<std::string, Tensor>;
  explicit PromptCache(size_t capacity);

  /// Model, prompt, negative prompt, whether guidance is on (with guidance off an encoder
  /// may skip the negative prompt, so those outputs differ; unset is a third case) and
  /// width x height.
  static std::string key_for(const std::string& model, const Request& r);

  std::optional<Entry> get(const std::string& key);  ///< counts a hit or a miss
  void put(const std::string& key, Entry entry);     ///< evicts the least recently used

  size_t size() const;
  size_t capacity() const { return capacity_; }
  uint64_t hits() const;
  uint64_t misses() const;

 private:
  size_t capacity_;
  mutable std::mutex mutex_;
  std::list<std::pair<std::string, Entry>> order_;  ///< most recent first
  std::unordered_map<std::string, std::list<std::pair<std::string, Entry>>::iterator> index_;
  uint64_t hits_ = 0, misses_ = 0;
};

}  // namespace stagecraft::actors

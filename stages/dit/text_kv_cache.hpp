#pragma once
// The cross-attention keys and values of PixArt texts seen lately, per block. They depend
// only on the text (its embedding rows and mask) and the weights, never on the latents or
// the step, yet every step of every job computed them again: with the shipped model 13.5%
// of a denoise step's FLOPs, about 5% at PixArt-alpha's width and 77 text tokens. A job's
// prompt and the negative prompt all jobs share are computed once and read back at every
// later step. The rows come from the same row-invariant kernels as a fresh computation, so
// an image's bytes do not change (tested).
//
//   TextKvCache cache(256 << 20);
//   if (auto kv = cache.find(key)) use((*kv)[block]);  // [1, L, 2D] of that block
//   else kv = cache.put(key, computed_rows);
//
// Bounded: least recently used entries go first once the bytes pass the budget;
// STAGECRAFT_TEXT_KV_CACHE_MB sets it (default 256, 0 turns the cache off). Thread-safe.
#include <cstddef>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/tensor.hpp"

namespace stagecraft {

class TextKvCache {
 public:
  using Rows = std::vector<Tensor>;  ///< per block, [1, L, 2D]
  explicit TextKvCache(size_t max_bytes);
  /// The budget from STAGECRAFT_TEXT_KV_CACHE_MB (MiB), else 256 MiB.
  static size_t budget_from_env();

  /// The rows cached under `key` (the text's bytes), most recently used now; null if none.
  std::shared_ptr<const Rows> find(const std::string& key);
  /// Keeps `rows` under `key` when they fit the budget (evicting the least recently used),
  /// and returns them either way.
  std::shared_ptr<const Rows> put(const std::string& key, Rows rows);
  void clear();
  size_t bytes() const;
  size_t entries() const;

 private:
  struct Entry {
    std::string key;
    std::shared_ptr<const Rows> rows;
    size_t bytes = 0;
  };
  const size_t max_bytes_;
  mutable std::mutex mu_;
  std::list<Entry> lru_;  ///< most recently used first
  std::unordered_map<std::string, std::list<Entry>::iterator> index_;
  size_t bytes_ = 0;
};

}  // namespace stagecraft

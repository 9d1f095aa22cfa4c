#pragma once
// The cache of transformed weights the CPU kernels keep (Winograd's transformed filters,
// gemm_rows's packed panels): one copy per weight tensor, made once and reused while the
// tensor lives, within a byte budget read once from the environment. Internal to kernels/cpu/.
//
//   static WeightCache<PackedWeight> cache("STAGECRAFT_GEMM_ROWS_CACHE_MB", 512, /*samples=*/8);
//   auto packed = cache.get(w, /*variant=*/0, [&] { return pack_weight(w); },
//                           [](const PackedWeight& p) { return p.bytes(); });
//
// A cached copy is found by the weight's storage and byte offset (and a variant, e.g.
// Winograd's tile size) and is stale — made again — when the storage was freed (its address
// recycled), the view differs, or a sample of the weight's bytes changed (weights are meant
// to be immutable after load, so the sample is a guard, not a guarantee).
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <tuple>

#include "core/tensor.hpp"

namespace stagecraft::kernels::cpu {

/// `env` in MiB as bytes (negative: 0), or `default_mb` when unset.
int64_t cache_budget_from_env(const char* env, long long default_mb);

/// The machine's physical memory in MiB (sysconf), 0 where it cannot be read.
long long physical_memory_mb();

/// `bytes` of 64-byte aligned memory for a transformed weight, freed by the deleter. From
/// 2 MiB up it is 2 MiB aligned and asks the kernel for transparent huge pages
/// (MADV_HUGEPAGE; Debian's default THP mode is `madvise`): kernels stream these copies
/// from DRAM on every call, and with 4 KiB pages each panel crossing cost a TLB walk. At
/// PixArt-alpha's width gemm_rows ran 10-17% slower on weights not in cache than on cached
/// ones; with huge pages the gap mostly closed (docs/kernels.md). Throws std::bad_alloc.
std::shared_ptr<float> alloc_weight_floats(size_t bytes);

/// FNV-1a over `samples` evenly spaced elements' bytes (the whole tensor when smaller).
uint64_t weight_sample(const Tensor& w, int64_t samples);

/// Entries and bytes held by a cache, and its lookups (for tests and benchmarks).
struct WeightCacheStats {
  int64_t entries = 0, bytes = 0, hits = 0, misses = 0;
};

template <class Value>
class WeightCache {
 public:
  /// `samples`: how many of a weight's elements the staleness check reads on every lookup
  /// (they miss the CPU caches, so fewer cost less).
  WeightCache(const char* budget_env, long long default_mb, int64_t samples)
      : budget_(cache_budget_from_env(budget_env, default_mb)), samples_(samples) {}

  /// The copy of `w` made by `make` (run outside the lock, so other calls go on meanwhile),
  /// kept when it fits the budget and `keep` is true (false: a caller that can afford to
  /// remake it per call uses a kept copy if there is one but adds none). With a budget of 0
  /// or a non-contiguous `w`, every call makes a fresh copy.
  std::shared_ptr<const Value> get(const Tensor& w, int variant, const std::function<std::shared_ptr<const Value>()>& make,
                                   const std::function<int64_t(const Value&)>& bytes_of, bool keep = true) {
    if (budget_ == 0 || !w.is_contiguous()) return make();
    const Key key{w.storage().get(), w.byte_offset(), variant};
    const uint64_t sample = weight_sample(w, samples_);
    {
      std::lock_guard<std::mutex> lk(mu_);
      auto it = entries_.find(key);
      if (it != entries_.end()) {
        const Entry& e = it->second;
        const auto live = e.storage.lock();
        if (live == w.storage() && e.shape == w.shape() && e.strides == w.strides() && e.dtype == w.dtype() &&
            e.sample == sample) {
          ++hits_;
          return e.value;
        }
        bytes_ -= e.bytes;  // freed storage (address recycled), another view, or rewritten: stale
        entries_.erase(it);
      }
      ++misses_;
    }
    std::shared_ptr<const Value> value = make();
    const int64_t bytes = bytes_of(*value);
    std::lock_guard<std::mutex> lk(mu_);
    for (auto it = entries_.begin(); it != entries_.end();) {  // drop entries of freed weights
      if (it->second.storage.expired()) {
        bytes_ -= it->second.bytes;
        it = entries_.erase(it);
      } else {
        ++it;
      }
    }
    if (keep && bytes_ + bytes <= budget_ && entries_.find(key) == entries_.end()) {
      entries_.emplace(key, Entry{w.storage(), w.shape(), w.strides(), w.dtype(), sample, value, bytes});
      bytes_ += bytes;
    }
    return value;
  }

  WeightCacheStats stats() {
    std::lock_guard<std::mutex> lk(mu_);
    return {static_cast<int64_t>(entries_.size()), bytes_, hits_, misses_};
  }
  /// Drops every entry; the lookup counts too when `reset_counts`.
  void clear(bool reset_counts) {
    std::lock_guard<std::mutex> lk(mu_);
    entries_.clear();
    bytes_ = 0;
    if (reset_counts) hits_ = misses_ = 0;
  }

 private:
  struct Entry {
    std::weak_ptr<Storage> storage;
    Shape shape, strides;
    DType dtype;
    uint64_t sample;
    std::shared_ptr<const Value> value;
    int64_t bytes;
  };
  using Key = std::tuple<const Storage*, size_t, int>;  // storage, byte offset, variant

  const int64_t budget_;
  const int64_t samples_;
  std::mutex mu_;
  std::map<Key, Entry> entries_;
  int64_t bytes_ = 0, hits_ = 0, misses_ = 0;
};

}  // namespace stagecraft::kernels::cpu

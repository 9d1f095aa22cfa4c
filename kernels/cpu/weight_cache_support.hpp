#pragma once
// What the CPU kernels' caches of transformed weights share (Winograd's transformed filters,
// gemm_rows's packed panels): a budget read once from the environment, and a cheap sample of
// a weight's bytes that tells a cached copy is stale when a weight was rewritten in place.
// Internal to kernels/cpu/.
#include <cstdint>

#include "core/tensor.hpp"

namespace stagecraft::kernels::cpu {

/// `env` in MiB as bytes (negative: 0), or `default_mb` when unset.
int64_t cache_budget_from_env(const char* env, long long default_mb);

/// FNV-1a over `samples` evenly spaced elements' bytes (the whole tensor when smaller).
/// Weights are meant to be immutable after load, so this is a guard, not a guarantee;
/// fewer samples cost less on every lookup.
uint64_t weight_sample(const Tensor& w, int64_t samples);

}  // namespace stagecraft::kernels::cpu

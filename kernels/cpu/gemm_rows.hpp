#pragma once
// Row-invariant f32 GEMM for small products (internal to kernels/cpu/; linear_per_item
// uses it, see linear.cpp): y[M, N] = x[M, K] · w[N, K]ᵀ (+ bias[N]), x and y contiguous.
//
// Each output is one fused multiply-add chain over k = 0, 1, ..., K-1 starting from 0,
// then + bias[n]. Its bits therefore depend only on its row of x, its row of w and K —
// never on M, on the tile or thread it falls in, or on the other rows of the call — so a
// job's rows give the same bytes alone or batched with others.
//
// The kernel reads w packed in panels of 16 outputs ([K][16] each, contiguous), which
// packed_weight_cached() makes once per weight tensor and keeps:
//
//   auto pw = packed_weight_cached(w);             // w: [N, K], any float dtype
//   gemm_rows(x, *pw, bias, y, M);
#include <cstdint>
#include <memory>

#include "core/tensor.hpp"
#include "kernels/cpu/weight_cache_support.hpp"

namespace stagecraft::kernels::cpu {

/// w [N, K] as f32 panels of 16 outputs: element (n, k) at data[(n / 16) * K * 16 + k * 16 + n % 16];
/// the last panel's missing outputs are zeros. 64-byte aligned, so a panel row is one cache line.
struct PackedWeight {
  int64_t N = 0, K = 0;
  std::shared_ptr<float> data;
  const float* panel(int64_t p) const { return data.get() + p * K * 16; }
};

/// Packs `w` ([N, K], any float dtype and strides).
std::shared_ptr<const PackedWeight> pack_weight(const Tensor& w);
/// pack_weight() once per weight tensor: a process-wide cache keyed by (storage, byte offset)
/// and checked against shape, strides, dtype and a hash of sampled values; entries of freed
/// storage are dropped, so a new tensor at a recycled address never gets stale panels.
/// Bounded by STAGECRAFT_GEMM_ROWS_CACHE_MB (default a quarter of the machine's memory, at
/// least 512; 0 turns it off); once full, new weights are packed per call. Only contiguous
/// weights are cached.
std::shared_ptr<const PackedWeight> packed_weight_cached(const Tensor& w);

using PackedWeightCacheStats = WeightCacheStats;
PackedWeightCacheStats packed_weight_cache_stats();
void packed_weight_cache_clear();

/// Which kernel runs: `best` is the AVX-512 one where the CPU has it (unless
/// STAGECRAFT_GEMM_ROWS_AVX512=0), else AVX2 (or scalar in a build without AVX2); `avx2`
/// forces the latter. All give the same bits: the choice is speed only (and for tests).
enum class GemmRowsIsa { best, avx2 };
bool gemm_rows_avx512_available();

/// What happens to each output after `+ bias`, while its tile is still in cache: one pass
/// fewer over the output than a separate op. Element-wise and the same code whichever
/// kernel, tile or thread computed the output, so row invariance holds for it too.
struct GemmRowsEpilogue {
  enum class Kind { none, gelu_tanh, gelu_erf, residual };
  Kind kind = Kind::none;
  /// residual: y = residual + gate ⊙ y, residual [M, N] contiguous; row m reads the gate row
  /// gate + (m / gate_rows) * gate_stride (N floats), so one row per item of gate_rows
  /// rows; no gate means 1.
  const float* residual = nullptr;
  const float* gate = nullptr;
  int64_t gate_rows = 1, gate_stride = 0;
};

/// y[M, w.N] = epilogue(x[M, w.K] · wᵀ (+ bias[w.N])).
void gemm_rows(const float* x, const PackedWeight& w, const float* bias, float* y, int64_t M,
               GemmRowsIsa isa = GemmRowsIsa::best, const GemmRowsEpilogue& epilogue = {});

/// The tensor-level call (linear.cpp): y [..., w.N] = epilogue(x [..., K] · wᵀ + bias) with
/// w packed through packed_weight_cached(); f16/bf16 in and out through f32. The epilogue's
/// residual and gate pointers are f32 buffers the caller prepared.
Tensor linear_rows(const Tensor& x, const Tensor& w, const Tensor* bias, const GemmRowsEpilogue& epilogue);

}  // namespace stagecraft::kernels::cpu

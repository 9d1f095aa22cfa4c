// linear and matmul on single-threaded OpenBLAS sgemm calls over our pool (blas.hpp),
// linear_per_item on the row-invariant gemm_rows; f16/bf16 operands are widened to f32 first.
#include <algorithm>
#include <memory>

#include "core/error.hpp"
#include "kernels/cpu/blas.hpp"
#include "kernels/cpu/common.hpp"
#include "kernels/cpu/cpu_ops.hpp"
#include "kernels/cpu/gemm_rows.hpp"

namespace stagecraft::kernels::cpu {

Tensor linear(const Tensor& x, const Tensor& w, const Tensor* bias) {
  const int64_t K = x.size(-1), N = w.size(0);
  const int64_t M = K == 0 ? 0 : x.numel() / K;
  Shape out_shape = x.shape();
  out_shape.back() = N;
  F32In xf(x), wf(w);
  F32Out y(out_shape, x.dtype());
  float* out = y.data();
  if (M == 0 || N == 0) return y.finish();
  if (K == 0) {
    std::fill(out, out + M * N, 0.0f);
  } else {
    sgemm_tiles(true, M, N, K, xf.data(), K, wf.data(), K, out, N);
  }
  if (bias) {
    F32In bf(*bias);
    const float* b = bf.data();
    // The bias pass is memory-bound; split rows only when there are enough of them.
    parallel_for(M, std::max<int64_t>(1, 65536 / std::max<int64_t>(1, N)), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        float* row = out + r * N;
        for (int64_t j = 0; j < N; ++j) row[j] += b[j];
      }
    });
  }
  return y.finish();
}

// Every item, whatever its rows, goes through the row-invariant gemm_rows, all items in one
// call: an output's bits depend only on its own row, so a job gives the same bytes alone or
// batched, and the call needs no per-item GEMMs. It replaced one OpenBLAS sgemm per item for
// items of >= 256 rows: gemm_rows reads weights packed once (OpenBLAS repacked them on every
// call, ~8% of a PixArt call), runs on our pool (OpenBLAS's threads spun in sched_yield
// while our loops ran, ~15% of its samples), and can fuse the next element-wise op into the
// store (linear_fused.cpp). See docs/kernels.md for the figures.
Tensor linear_rows(const Tensor& x, const Tensor& w, const Tensor* bias, const GemmRowsEpilogue& epilogue) {
  const int64_t K = x.size(-1), N = w.size(0);
  const int64_t M = K == 0 ? 0 : x.numel() / K;
  Shape out_shape = x.shape();
  out_shape.back() = N;
  F32Out y(out_shape, x.dtype());
  if (M == 0 || N == 0) return y.finish();
  F32In xf(x);
  const auto pw = packed_weight_cached(w);  // packed once per weight tensor, then reused
  std::unique_ptr<F32In> bf;
  if (bias) bf = std::make_unique<F32In>(*bias);
  gemm_rows(xf.data(), *pw, bf ? bf->data() : nullptr, y.data(), M, GemmRowsIsa::best, epilogue);
  return y.finish();
}

Tensor linear_per_item(const Tensor& x, const Tensor& w, const Tensor* bias) { return linear_rows(x, w, bias, {}); }

Tensor matmul(const Tensor& a, const Tensor& b, bool trans_b) {
  const bool batched = a.ndim() == 3 || b.ndim() == 3;
  const int64_t Ba = a.ndim() == 3 ? a.size(0) : 1, Bb = b.ndim() == 3 ? b.size(0) : 1;
  const int64_t B = std::max(Ba, Bb);
  const int64_t M = a.size(-2), K = a.size(-1);
  const int64_t N = trans_b ? b.size(-2) : b.size(-1);
  F32In af(a), bf(b);
  F32Out y(batched ? Shape{B, M, N} : Shape{M, N}, a.dtype());
  float* out = y.data();
  if (M == 0 || N == 0) return y.finish();
  for (int64_t i = 0; i < B; ++i) {
    const float* pa = af.data() + (Ba == 1 ? 0 : i * M * K);
    const float* pb = bf.data() + (Bb == 1 ? 0 : i * K * N);
    float* po = out + i * M * N;
    if (K == 0) {
      std::fill(po, po + M * N, 0.0f);
      continue;
    }
    sgemm_tiles(trans_b, M, N, K, pa, K, pb, trans_b ? K : N, po, N);
  }
  return y.finish();
}

}  // namespace stagecraft::kernels::cpu

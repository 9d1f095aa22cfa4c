// Linear layers with the next element-wise op fused into gemm_rows's store (its epilogue):
// the feed-forward's bias + GELU, and an adaLN block's gated residual x + gate ⊙ (W·h + b).
// Each saves a pass that reads and writes the whole output (and the allocation of a
// temporary of its size) — for PixArt's feed-forward at 256 tokens a 4.7 MB tensor per item.
#include <algorithm>
#include <memory>

#include "kernels/cpu/common.hpp"
#include "kernels/cpu/cpu_ops.hpp"
#include "kernels/cpu/gemm_rows.hpp"

namespace stagecraft::kernels::cpu {

Tensor linear_gelu_per_item(const Tensor& x, const Tensor& w, const Tensor* bias, bool tanh_approximation) {
  GemmRowsEpilogue e;
  e.kind = tanh_approximation ? GemmRowsEpilogue::Kind::gelu_tanh : GemmRowsEpilogue::Kind::gelu_erf;
  return linear_rows(x, w, bias, e);
}

Tensor linear_residual_per_item(const Tensor& x, const Tensor& w, const Tensor* bias, const Tensor& residual,
                                const Tensor* gate) {
  const int64_t K = x.size(-1), N = w.size(0);
  const int64_t M = K == 0 ? 0 : x.numel() / K;
  const int64_t items = x.ndim() >= 2 ? std::max<int64_t>(1, x.size(0)) : 1;
  F32In rf(residual);
  std::unique_ptr<F32In> gf;  // a [B, 1, N] slice of a modulation table is gathered here (B·N floats)
  GemmRowsEpilogue e;
  e.kind = GemmRowsEpilogue::Kind::residual;
  e.residual = rf.data();
  if (gate) {
    gf = std::make_unique<F32In>(*gate);
    e.gate = gf->data();
    e.gate_rows = std::max<int64_t>(1, M / items);
    e.gate_stride = gate->numel() == N ? 0 : N;
  }
  return linear_rows(x, w, bias, e);
}

}  // namespace stagecraft::kernels::cpu

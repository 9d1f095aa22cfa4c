// Public wrapper for attention (kernels/cuda/cuda_ops.hpp): picks the fused kernel
// when it applies, else the materialising reference path.
#include <cmath>
#include <type_traits>

#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/cuda_ops.hpp"
#include "kernels/cuda/gemm.cuh"

namespace stagecraft::kernels::cuda {
namespace {

constexpr size_t kScoreBytes = size_t{1} << 30;  // cap on the materialised S + P of one chunk

bool aligned16(const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; }

/// The reference path: contiguous q/k/v, S = scale·Q·Kᵀ (f32), masked softmax to P (T),
/// O = P·V, in chunks of batch·heads so S stays bounded.
void attention_materialised(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& o, float scale,
                            const AttentionParams& p, DType mask_dtype) {
  const int64_t BH = static_cast<int64_t>(p.B) * p.H, Lq = p.Lq, Lk = p.Lk, D = q.size(3);
  const size_t es = dtype_size(q.dtype());
  const int64_t per_bh = Lq * Lk * static_cast<int64_t>(sizeof(float) + es);
  const int64_t chunk = std::clamp<int64_t>(static_cast<int64_t>(kScoreBytes) / std::max<int64_t>(per_bh, 1), 1, BH);
  Tensor S = Tensor::empty({chunk * Lq * Lk}, DType::f32, q.device());
  Tensor P = Tensor::empty({chunk * Lq * Lk}, q.dtype(), q.device());
  const cudaStream_t s = stream();
  for (int64_t bh0 = 0; bh0 < BH; bh0 += chunk) {
    const int64_t nb = std::min(chunk, BH - bh0);
    const char* qp = static_cast<const char*>(q.data()) + static_cast<size_t>(bh0 * Lq * D) * es;
    const char* kp = static_cast<const char*>(k.data()) + static_cast<size_t>(bh0 * Lk * D) * es;
    const char* vp = static_cast<const char*>(v.data()) + static_cast<size_t>(bh0 * Lk * D) * es;
    char* op = static_cast<char*>(o.data()) + static_cast<size_t>(bh0 * Lq * D) * es;
    // Row-major S[Lq, Lk] = Q·Kᵀ  <=>  column-major Sᵀ[Lk, Lq] = (K stored D×Lk)ᵀ · (Q stored D×Lq).
    gemm_strided_batched(true, false, Lk, Lq, D, scale, kp, D, Lk * D, qp, D, Lq * D, q.dtype(), 0.0f, S.data(), Lk,
                         Lq * Lk, DType::f32, nb, s);
    dispatch_float(q.dtype(), "attention", [&](auto tag) {
      using T = decltype(tag);
      masked_softmax<T>(P.data_as<T>(), S.data_as<const float>(), nb * Lq, p.Lq, p.Lk, p.H, bh0, p.causal, p.mask,
                        mask_dtype, s);
    });
    // Row-major O[Lq, D] = P·V  <=>  column-major Oᵀ[D, Lq] = (V stored D×Lk) · (P stored Lk×Lq).
    gemm_strided_batched(false, false, D, Lq, Lk, 1.0f, vp, D, Lk * D, P.data(), Lk, Lq * Lk, q.dtype(), 0.0f, op, D,
                         Lq * D, q.dtype(), nb, s);
  }
}

}  // namespace

Tensor attention(const Tensor& q_in, const Tensor& k_in, const Tensor& v_in, const ops::AttentionOptions& opt) {
  require_cuda(q_in, "attention", "q");
  require_cuda(k_in, "attention", "k");
  require_cuda(v_in, "attention", "v");
  SC_CHECK(q_in.ndim() == 4 && k_in.ndim() == 4 && v_in.ndim() == 4, Errc::shape_mismatch,
           "attention wants [B, H, L, D] tensors, got " << q_in.shape_str() << ", " << k_in.shape_str() << ", "
                                                        << v_in.shape_str());
  const int64_t B = q_in.size(0), H = q_in.size(1), Lq = q_in.size(2), D = q_in.size(3), Lk = k_in.size(2);
  SC_CHECK(k_in.size(0) == B && k_in.size(1) == H && k_in.size(3) == D && v_in.shape() == k_in.shape(),
           Errc::shape_mismatch,
           "attention: k and v must be [" << B << ", " << H << ", Lk, " << D << "], got " << k_in.shape_str()
                                          << " and " << v_in.shape_str() << " (the fused kernel wants Dv = Dq)");
  SC_CHECK(q_in.dtype() == k_in.dtype() && q_in.dtype() == v_in.dtype(), Errc::shape_mismatch,
           "attention: q, k and v must share a dtype");
  SC_CHECK(Lq <= INT32_MAX && Lk <= INT32_MAX, Errc::unsupported, "attention: sequence longer than 2^31");
  DeviceGuard g(q_in.device());
  Tensor o = Tensor::empty({B, H, Lq, D}, q_in.dtype(), q_in.device());
  if (o.numel() == 0) return o;

  Tensor mask;
  if (opt.key_padding_mask && opt.key_padding_mask->defined()) {
    require_cuda(*opt.key_padding_mask, "attention", "key_padding_mask");
    SC_CHECK(opt.key_padding_mask->numel() == B * Lk && opt.key_padding_mask->size(0) == B, Errc::shape_mismatch,
             "attention: key_padding_mask must be [" << B << ", " << Lk << "], got "
                                                      << opt.key_padding_mask->shape_str());
    mask = contig(*opt.key_padding_mask);
  }
  const float scale = opt.scale != 0.0f ? opt.scale : 1.0f / std::sqrt(static_cast<float>(D));
  if (Lk == 0) {  // nothing to attend to: every row is fully masked
    SC_CUDA_CHECK(cudaMemsetAsync(o.data(), 0, o.nbytes(), stream()));
    return o;
  }

  AttentionParams p{};
  p.o = o.data();
  p.B = static_cast<int>(B);
  p.H = static_cast<int>(H);
  p.Lq = static_cast<int>(Lq);
  p.Lk = static_cast<int>(Lk);
  p.scale = scale;
  p.causal = opt.causal;
  p.mask = mask.defined() ? mask.data() : nullptr;
  p.mask_code = mask.defined() ? dtype_code(mask.dtype()) : 0;

  if (flash_attention_supported(q_in.dtype(), D)) {
    // The fused kernel reads strided views directly; only the head dim must be dense.
    auto dense_last = [](const Tensor& t) { return t.strides()[3] == 1 ? t : contiguous(t); };
    const Tensor q = dense_last(q_in), k = dense_last(k_in), v = dense_last(v_in);
    p.q = q.data();
    p.k = k.data();
    p.v = v.data();
    p.q_sb = q.strides()[0], p.q_sh = q.strides()[1], p.q_sl = q.strides()[2];
    p.k_sb = k.strides()[0], p.k_sh = k.strides()[1], p.k_sl = k.strides()[2];
    p.v_sb = v.strides()[0], p.v_sh = v.strides()[1], p.v_sl = v.strides()[2];
    auto mult8 = [](const Tensor& t) {  // strides of size-1 dims are never used
      for (int d = 0; d < 3; ++d)
        if (t.size(d) > 1 && t.strides()[d] % 8 != 0) return false;
      return true;
    };
    const bool vec = aligned16(k.data()) && aligned16(v.data()) && mult8(k) && mult8(v);
    dispatch_float(q.dtype(), "attention", [&](auto tag) {
      using T = decltype(tag);
      if constexpr (!std::is_same_v<T, float>) flash_attention<T>(p, static_cast<int>(D), vec, stream());
    });
    return o;
  }
  const Tensor q = contig(q_in), k = contig(k_in), v = contig(v_in);
  attention_materialised(q, k, v, o, scale, p, mask.defined() ? mask.dtype() : DType::f32);
  return o;
}

}  // namespace stagecraft::kernels::cuda

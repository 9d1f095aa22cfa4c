// cuBLAS(Lt) plumbing and the linear / matmul ops (kernels/cuda/cuda_ops.hpp).
#include <map>
#include <tuple>
#include <unordered_map>

#include "kernels/cuda/cuda_ops.hpp"
#include "kernels/cuda/gemm.cuh"

namespace stagecraft::kernels::cuda {
namespace {

constexpr size_t kWorkspaceBytes = 32u << 20;  // cuBLASLt's recommendation for Hopper

struct DeviceHandles {
  cublasHandle_t blas = nullptr;
  cublasLtHandle_t lt = nullptr;
  std::unordered_map<cudaStream_t, void*> workspaces;
};

int current_device() {
  int d = 0;
  SC_CUDA_CHECK(cudaGetDevice(&d));
  return d;
}

DeviceHandles& handles() {
  // Leaked on purpose, see gemm.cuh.
  thread_local auto* per_device = new std::unordered_map<int, DeviceHandles>();
  DeviceHandles& h = (*per_device)[current_device()];
  if (!h.blas) SC_CUBLAS_CHECK(cublasCreate(&h.blas));
  if (!h.lt) SC_CUBLAS_CHECK(cublasLtCreate(&h.lt));
  return h;
}

/// Largest power of two (<= 256) dividing the address: what cuBLASLt may assume.
uint32_t alignment_of(const void* p) {
  uint32_t a = 256;
  while (a > 1 && (reinterpret_cast<uintptr_t>(p) % a) != 0) a >>= 1;
  return a;
}

/// A cached cuBLASLt plan for one linear shape: descriptors and the heuristic's
/// algorithm, so repeated calls cost a lookup instead of a heuristic query.
struct LtPlan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};
  bool usable = false;
};

using LtKey = std::tuple<int, int, int64_t, int64_t, int64_t, bool, uint32_t, uint32_t, uint32_t, uint32_t, size_t>;

LtPlan make_plan(DType dtype, int64_t M, int64_t N, int64_t K, bool has_bias, uint32_t al_x, uint32_t al_w,
                 uint32_t al_y, uint32_t al_b, size_t ws_bytes) {
  LtPlan p;
  const cudaDataType_t t = cuda_data_type(dtype);
  SC_CUBLAS_CHECK(cublasLtMatmulDescCreate(&p.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
  SC_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
  SC_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
  if (has_bias) {
    const cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
    // The bias is read in D's dtype (Lt's default), which linear() guarantees by casting.
    SC_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi)));
  }
  // Row-major y[M,N] = x[M,K]·w[N,K]ᵀ is column-major yᵀ[N,M] = (w stored K×N)ᵀ · (x stored K×M).
  SC_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.a, t, K, N, K));
  SC_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.b, t, K, M, K));
  SC_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.c, t, N, M, N));
  cublasLtMatmulPreference_t pref = nullptr;
  SC_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  SC_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws_bytes,
                                                       sizeof(ws_bytes)));
  SC_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al_w,
                                                       sizeof(al_w)));
  SC_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al_x,
                                                       sizeof(al_x)));
  SC_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al_y,
                                                       sizeof(al_y)));
  SC_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al_y,
                                                       sizeof(al_y)));
  (void)al_b;  // the bias alignment is part of the cache key; Lt has no preference for it
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  const cublasStatus_t st =
      cublasLtMatmulAlgoGetHeuristic(handles().lt, p.op, p.a, p.b, p.c, p.c, pref, 1, &result, &found);
  cublasLtMatmulPreferenceDestroy(pref);
  if (st == CUBLAS_STATUS_SUCCESS && found > 0) {
    p.algo = result.algo;
    p.usable = true;
  }
  return p;
}

}  // namespace

cudaDataType_t cuda_data_type(DType t) {
  switch (t) {
    case DType::f32: return CUDA_R_32F;
    case DType::f16: return CUDA_R_16F;
    case DType::bf16: return CUDA_R_16BF;
    default:
      SC_FAIL(Errc::unsupported, "GEMM on CUDA supports f32, f16 and bf16, got " << dtype_name(t)
                                                                                 << "; cast the operands first");
  }
}

cublasHandle_t cublas_handle(cudaStream_t s) {
  cublasHandle_t h = handles().blas;
  SC_CUBLAS_CHECK(cublasSetStream(h, s));
  return h;
}

cublasLtHandle_t cublaslt_handle() { return handles().lt; }

void* gemm_workspace(cudaStream_t s, size_t* bytes) {
  auto& ws = handles().workspaces[s];
  if (!ws) SC_CUDA_CHECK(cudaMalloc(&ws, kWorkspaceBytes));
  *bytes = kWorkspaceBytes;
  return ws;
}

void gemm_strided_batched(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const void* A,
                          int64_t lda, int64_t stride_a, const void* B, int64_t ldb, int64_t stride_b, DType ab_dtype,
                          float beta, void* C, int64_t ldc, int64_t stride_c, DType c_dtype, int64_t batch,
                          cudaStream_t s) {
  if (m == 0 || n == 0 || batch == 0) return;
  SC_CHECK(m <= INT32_MAX && n <= INT32_MAX && k <= INT32_MAX && batch <= INT32_MAX && lda <= INT32_MAX &&
               ldb <= INT32_MAX && ldc <= INT32_MAX,
           Errc::unsupported, "GEMM dimension beyond 2^31; split the batch");
  cublasHandle_t h = cublas_handle(s);
  SC_CUBLAS_CHECK(cublasGemmStridedBatchedEx(
      h, trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, static_cast<int>(m),
      static_cast<int>(n), static_cast<int>(k), &alpha, A, cuda_data_type(ab_dtype), static_cast<int>(lda), stride_a, B,
      cuda_data_type(ab_dtype), static_cast<int>(ldb), stride_b, &beta, C, cuda_data_type(c_dtype),
      static_cast<int>(ldc), stride_c, static_cast<int>(batch), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

void linear_gemm(void* y, const void* x, const void* w, const void* bias, DType dtype, int64_t M, int64_t N,
                 int64_t K, cudaStream_t s, uint32_t align_cap) {
  if (M == 0 || N == 0) return;
  auto aligned = [&](const void* p) { return align_cap ? std::min(alignment_of(p), align_cap) : alignment_of(p); };
  size_t ws_bytes = 0;
  void* ws = gemm_workspace(s, &ws_bytes);
  thread_local auto* plans = new std::map<LtKey, LtPlan>();  // leaked on purpose, see gemm.cuh
  const LtKey key{current_device(), static_cast<int>(dtype), M, N, K, bias != nullptr, aligned(x),
                  alignment_of(w), aligned(y), bias ? alignment_of(bias) : 0u, ws_bytes};
  auto it = plans->find(key);
  if (it == plans->end())
    it = plans->emplace(key, make_plan(dtype, M, N, K, bias != nullptr, std::get<6>(key), std::get<7>(key),
                                       std::get<8>(key), std::get<9>(key), ws_bytes))
             .first;
  LtPlan& p = it->second;
  if (K > 0 && p.usable) {
    if (bias)
      SC_CUBLAS_CHECK(
          cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)));
    const float alpha = 1.0f, beta = 0.0f;
    SC_CUBLAS_CHECK(cublasLtMatmul(handles().lt, p.op, &alpha, w, p.a, x, p.b, &beta, y, p.c, y, p.c, &p.algo, ws,
                                   ws_bytes, s));
    return;
  }
  // No Lt algorithm (or K == 0, where the product is all zeros): plain cuBLAS plus a bias pass.
  if (K == 0) {
    SC_CUDA_CHECK(cudaMemsetAsync(y, 0, static_cast<size_t>(M * N) * dtype_size(dtype), s));
  } else {
    gemm_strided_batched(true, false, N, M, K, 1.0f, w, K, 0, x, K, 0, dtype, 0.0f, y, N, 0, dtype, 1, s);
  }
  if (bias) {
    dispatch_float(dtype, "linear", [&](auto tag) {
      using T = decltype(tag);
      add_bias<T>(static_cast<T*>(y), bias, dtype, M * N, N, 1, s);
    });
  }
}

namespace {

// linear as `items` GEMMs of M / items rows each (see ops::linear_per_item): every item
// uses the same plan, chosen for the alignment all items share.
Tensor linear_items(const Tensor& x_in, const Tensor& w_in, const Tensor* bias_in, bool per_item) {
  require_cuda(x_in, "linear", "x");
  require_cuda(w_in, "linear", "w");
  SC_CHECK(x_in.ndim() >= 1 && w_in.ndim() == 2 && x_in.size(-1) == w_in.size(1), Errc::shape_mismatch,
           "linear wants x [..., K] and w [N, K], got " << x_in.shape_str() << " and " << w_in.shape_str());
  SC_CHECK(x_in.dtype() == w_in.dtype(), Errc::shape_mismatch,
           "linear: x is " << dtype_name(x_in.dtype()) << " but w is " << dtype_name(w_in.dtype())
                           << "; cast the weight to the activation dtype when loading");
  DeviceGuard g(x_in.device());
  const Tensor x = contig(x_in), w = contig(w_in);
  const int64_t K = w.size(1), N = w.size(0);
  int64_t M = 1;  // rows: the product of x's leading dims (also right when K == 0)
  for (int d = 0; d + 1 < x.ndim(); ++d) M *= x.size(d);
  Tensor bias;
  if (bias_in && bias_in->defined()) {
    require_cuda(*bias_in, "linear", "bias");
    SC_CHECK(bias_in->numel() == N, Errc::shape_mismatch,
             "linear: bias must have " << N << " elements, got " << bias_in->shape_str());
    bias = contig(*bias_in);
    if (bias.dtype() != x.dtype()) bias = cast(bias, x.dtype());  // the Lt epilogue reads bias in the output dtype
  }
  Shape out_shape = x.shape();
  out_shape.back() = N;
  Tensor y = Tensor::empty(out_shape, x.dtype(), x.device());
  const void* b = bias.defined() ? bias.data() : nullptr;
  if (!per_item) {
    linear_gemm(y.data(), x.data(), w.data(), b, x.dtype(), M, N, K, stream());
    return y;
  }
  // Even a lone item takes the capped plan: alone or batched, it must run the same algorithm.
  const int64_t items = x.ndim() >= 2 ? std::max<int64_t>(1, x.size(0)) : 1;
  const int64_t rows = M / items;
  const size_t esz = dtype_size(x.dtype());
  // The largest alignment every item's x and y pointers have, whatever the item count.
  const uint32_t cap = std::min(alignment_of(reinterpret_cast<const void*>(static_cast<uintptr_t>(rows * K * esz))),
                                alignment_of(reinterpret_cast<const void*>(static_cast<uintptr_t>(rows * N * esz))));
  for (int64_t i = 0; i < items; ++i)
    linear_gemm(static_cast<char*>(y.data()) + i * rows * N * esz, static_cast<const char*>(x.data()) + i * rows * K * esz,
                w.data(), b, x.dtype(), rows, N, K, stream(), std::max<uint32_t>(1, cap));
  return y;
}

}  // namespace

Tensor linear(const Tensor& x, const Tensor& w, const Tensor* bias) { return linear_items(x, w, bias, false); }

Tensor linear_per_item(const Tensor& x, const Tensor& w, const Tensor* bias) {
  return linear_items(x, w, bias, true);
}

Tensor matmul(const Tensor& a_in, const Tensor& b_in, bool trans_b) {
  require_cuda(a_in, "matmul", "a");
  require_cuda(b_in, "matmul", "b");
  SC_CHECK(a_in.ndim() >= 2 && b_in.ndim() >= 2, Errc::shape_mismatch,
           "matmul wants [B, M, K] and [B, K, N] (or 2-D), got " << a_in.shape_str() << " and " << b_in.shape_str());
  SC_CHECK(a_in.dtype() == b_in.dtype(), Errc::shape_mismatch,
           "matmul: dtypes differ (" << dtype_name(a_in.dtype()) << " vs " << dtype_name(b_in.dtype()) << ")");
  DeviceGuard g(a_in.device());
  const Tensor a = contig(a_in), b = contig(b_in);
  const int64_t M = a.size(-2), K = a.size(-1);
  const int64_t bK = trans_b ? b.size(-1) : b.size(-2), N = trans_b ? b.size(-2) : b.size(-1);
  SC_CHECK(bK == K, Errc::shape_mismatch,
           "matmul: inner dims differ: " << a.shape_str() << " · " << b.shape_str() << (trans_b ? "ᵀ" : ""));
  const int64_t Ba = a.numel() / std::max<int64_t>(M * K, 1), Bb = b.numel() / std::max<int64_t>(K * N, 1);
  SC_CHECK(Ba == Bb || Ba == 1 || Bb == 1, Errc::shape_mismatch,
           "matmul: batch sizes " << Ba << " and " << Bb << " do not broadcast");
  const int64_t batch = std::max(Ba, Bb);
  Shape out_shape = (Ba >= Bb ? a.shape() : b.shape());
  out_shape[out_shape.size() - 2] = M;
  out_shape[out_shape.size() - 1] = N;
  Tensor y = Tensor::empty(out_shape, a.dtype(), a.device());
  if (K == 0) {
    SC_CUDA_CHECK(cudaMemsetAsync(y.data(), 0, y.nbytes(), stream()));
    return y;
  }
  // Row-major C = A·B is column-major Cᵀ[N,M] = Bᵀ·Aᵀ: b is the first cuBLAS operand.
  gemm_strided_batched(trans_b, false, N, M, K, 1.0f, b.data(), trans_b ? K : N, Bb == 1 ? 0 : K * N, a.data(), K,
                       Ba == 1 ? 0 : M * K, a.dtype(), 0.0f, y.data(), N, M * N, y.dtype(), batch, stream());
  return y;
}

}  // namespace stagecraft::kernels::cuda

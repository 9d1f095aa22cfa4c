#pragma once
// Attention. Two paths:
//  - flash_attention: a fused FlashAttention-2-style kernel for f16/bf16 and head
//    dims 64, 72, 128. Each block owns 64 query rows (4 warps × 16); K/V tiles of 64
//    keys go through shared memory; S = Q·Kᵀ and O += P·V run on tensor cores
//    (mma.sync m16n8k16, f32 accumulate) with an online softmax held in registers,
//    so the Lq×Lk score matrix never exists. K/V tiles are double-buffered: the next
//    one arrives by cp.async while the current one is multiplied. Q/K/V may be strided views (e.g. the
//    [B, L, H, D] -> [B, H, L, D] permute) as long as the last dim is contiguous.
//  - attention_reference: materialises S in f32 with cuBLAS, applies the masks in a
//    softmax kernel and multiplies by V; used for f32 and other head dims.
// Masks: causal (key j visible to query i when j <= i + Lk - Lq) and a [B, Lk]
// key-padding mask of any dtype (nonzero = attend). Fully masked rows give zeros.
#include "kernels/cuda/common.cuh"

namespace stagecraft::kernels::cuda {

struct AttentionParams {
  const void* q;
  const void* k;
  const void* v;
  void* o;  // contiguous [B, H, Lq, D]
  int64_t q_sb, q_sh, q_sl;  // element strides of batch, head and token; the head dim has stride 1
  int64_t k_sb, k_sh, k_sl;
  int64_t v_sb, v_sh, v_sl;
  int B, H, Lq, Lk;
  float scale;  // softmax scale (1/sqrt(D) by default)
  bool causal;
  const void* mask;  // contiguous [B, Lk] or null
  int mask_code;     // DType of mask
};

namespace flash {

constexpr int kRows = 64;   // query rows per block
constexpr int kCols = 64;   // keys per tile
constexpr int kWarps = 4;   // each warp owns 16 query rows

template <class T>
__device__ __forceinline__ void mma16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1);
template <>
__device__ __forceinline__ void mma16816<__nv_bfloat16>(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                                        uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
template <>
__device__ __forceinline__ void mma16816<__half>(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/// Two floats -> one register of two 16-bit values, the first in the low half (the
/// lower column index, as the mma fragment layouts require).
template <class T>
__device__ __forceinline__ uint32_t pack2(float lo, float hi);
template <>
__device__ __forceinline__ uint32_t pack2<__nv_bfloat16>(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}
template <>
__device__ __forceinline__ uint32_t pack2<__half>(float lo, float hi) {
  const __half2 v = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

template <class T>
__device__ __forceinline__ uint32_t bits16(T v) {
  return static_cast<uint32_t>(*reinterpret_cast<const uint16_t*>(&v));
}

/// B fragments of a 16(k)×8(n) block of row-major V in shared memory, transposed by
/// ldmatrix: lanes 0-7 address rows k = 0..7, lanes 8-15 rows k = 8..15.
__device__ __forceinline__ void ldmatrix_x2_trans(uint32_t& b0, uint32_t& b1, const void* row_ptr) {
  const uint32_t addr = static_cast<uint32_t>(__cvta_generic_to_shared(row_ptr));
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0, %1}, [%2];\n" : "=r"(b0), "=r"(b1) : "r"(addr));
}

/// 16-byte global -> shared copy that bypasses registers; `full` false writes zeros
/// (src-size 0: nothing is read from `src`, which must still be a valid address).
__device__ __forceinline__ void cp_async16(void* smem, const void* src, bool full) {
  const uint32_t addr = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(addr), "l"(src), "r"(full ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
/// Waits for every committed group but the most recent one.
__device__ __forceinline__ void cp_async_wait_all_but_newest() { asm volatile("cp.async.wait_group 1;\n" ::: "memory"); }

/// Bytes of dynamic shared memory the kernel for head dim D and element type T needs.
template <class T, int D>
constexpr size_t flash_smem_bytes() {
  constexpr int DK = (D + 15) / 16 * 16;
  return size_t{2} * kCols * (2 * (DK + 8)) * sizeof(T);
}

template <class T, int D>
__global__ void __launch_bounds__(kWarps * 32) flash_attention_kernel(AttentionParams p, bool vec) {
  constexpr int DK = (D + 15) / 16 * 16;  // head dim padded for the k16 steps of Q·Kᵀ
  constexpr int KS = DK / 16;             // k-steps of Q·Kᵀ
  constexpr int NO = D / 8;               // n-tiles of the output (D % 8 == 0)
  // Shared row strides (elements): DK + 8 keeps rows 16-byte aligned and makes both the
  // 32-bit K fragment reads and the 8-row ldmatrix reads of V bank-conflict free for
  // D = 64, 72 and 128 (word strides 36, 44, 68: distinct 4-bank groups per row).
  constexpr int KSTR = DK + 8;
  constexpr int VSTR = DK + 8;
  static_assert(D % 8 == 0, "head dim must be a multiple of 8");
  // Two stages of K and V (dynamic shared memory, flash_smem_bytes): the next tile is
  // fetched with cp.async while the current one is multiplied.
  extern __shared__ __align__(16) unsigned char flash_smem[];
  T* const Ks0 = reinterpret_cast<T*>(flash_smem);
  T* const Vs0 = Ks0 + kCols * KSTR;
  constexpr int kStage = kCols * (KSTR + VSTR);  // elements per stage
  __shared__ bool valid_buf[2][kCols];

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
  const int b = blockIdx.z, h = blockIdx.y;
  const int row_base = blockIdx.x * kRows;
  const int r0 = row_base + warp * 16 + g, r1 = r0 + 8;
  const T* q = static_cast<const T*>(p.q) + b * p.q_sb + h * p.q_sh;
  const T* k = static_cast<const T*>(p.k) + b * p.k_sb + h * p.k_sh;
  const T* v = static_cast<const T*>(p.v) + b * p.v_sb + h * p.v_sh;
  const float scale_log2 = p.scale * 1.4426950408889634f;  // exp(x) = exp2(x·log2 e)

  // Q fragments stay in registers for the whole key loop.
  uint32_t qa[KS][4];
  auto qbits = [&](int r, int c) -> uint32_t {
    return (r < p.Lq && c < D) ? bits16(q[static_cast<int64_t>(r) * p.q_sl + c]) : 0u;
  };
#pragma unroll
  for (int ks = 0; ks < KS; ++ks) {
    const int c = ks * 16 + 2 * t;
    qa[ks][0] = qbits(r0, c) | (qbits(r0, c + 1) << 16);
    qa[ks][1] = qbits(r1, c) | (qbits(r1, c + 1) << 16);
    qa[ks][2] = qbits(r0, c + 8) | (qbits(r0, c + 9) << 16);
    qa[ks][3] = qbits(r1, c + 8) | (qbits(r1, c + 9) << 16);
  }

  float o[NO][4];
#pragma unroll
  for (int i = 0; i < NO; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;
  float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f;  // rows r0 and r1, in log2 units

  int tiles = (p.Lk + kCols - 1) / kCols;
  const int causal_offset = p.Lk - p.Lq;
  if (p.causal) {
    const int last_row = min(row_base + kRows - 1, p.Lq - 1);
    const int last_key = last_row + causal_offset;
    tiles = last_key < 0 ? 0 : min(tiles, last_key / kCols + 1);
  }

  // Stages tile `tl` into buffer `st`: 16-byte cp.async (zero-filled past Lk and in the
  // K padding columns) when `vec`, element copies otherwise; plus its key-validity flags.
  auto load_tile = [&](int tl, int st) {
    const int key_base = tl * kCols;
    T* const Ks = Ks0 + st * kStage;
    T* const Vs = Vs0 + st * kStage;
    if (vec) {
      constexpr int KC = DK / 8, VC = D / 8;  // 16-byte chunks per row
      for (int i = tid; i < kCols * KC; i += kWarps * 32) {
        const int r = i / KC, c = (i % KC) * 8, key = key_base + r;
        const bool in = key < p.Lk && c < D;
        cp_async16(&Ks[r * KSTR + c], in ? k + static_cast<int64_t>(key) * p.k_sl + c : k, in);
      }
      for (int i = tid; i < kCols * VC; i += kWarps * 32) {
        const int r = i / VC, c = (i % VC) * 8, key = key_base + r;
        const bool in = key < p.Lk;
        cp_async16(&Vs[r * VSTR + c], in ? v + static_cast<int64_t>(key) * p.v_sl + c : v, in);
      }
    } else {
      for (int i = tid; i < kCols * DK; i += kWarps * 32) {
        const int r = i / DK, c = i % DK, key = key_base + r;
        Ks[r * KSTR + c] = (key < p.Lk && c < D) ? k[static_cast<int64_t>(key) * p.k_sl + c] : from_f32<T>(0.0f);
      }
      for (int i = tid; i < kCols * D; i += kWarps * 32) {
        const int r = i / D, c = i % D, key = key_base + r;
        Vs[r * VSTR + c] = key < p.Lk ? v[static_cast<int64_t>(key) * p.v_sl + c] : from_f32<T>(0.0f);
      }
    }
    for (int i = tid; i < kCols; i += kWarps * 32) {
      const int key = key_base + i;
      valid_buf[st][i] =
          key < p.Lk && (!p.mask || load_any(p.mask, static_cast<int64_t>(b) * p.Lk + key, p.mask_code) != 0.0f);
    }
    cp_async_commit();  // an empty group when nothing was issued; keeps the counting uniform
  };

  if (tiles > 0) load_tile(0, 0);
  for (int tile = 0; tile < tiles; ++tile) {
    const int key_base = tile * kCols, st = tile & 1;
    // Buffer st ^ 1 was last read in the previous iteration, which ended with a barrier.
    if (tile + 1 < tiles) load_tile(tile + 1, st ^ 1);
    else cp_async_commit();
    cp_async_wait_all_but_newest();  // this tile's group has landed (for this thread)
    __syncthreads();                 // ... and for every thread
    const T* const Ks = Ks0 + st * kStage;
    const T* const Vs = Vs0 + st * kStage;
    const bool* const valid = valid_buf[st];

    // S = Q·Kᵀ for this warp's 16 rows × 64 keys: 8 n-tiles of 8 keys.
    float s[8][4];
#pragma unroll
    for (int nt = 0; nt < 8; ++nt) {
      s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
      const T* krow = &Ks[(nt * 8 + g) * KSTR + 2 * t];
#pragma unroll
      for (int ks = 0; ks < KS; ++ks) {
        const uint32_t b0 = *reinterpret_cast<const uint32_t*>(krow + ks * 16);
        const uint32_t b1 = *reinterpret_cast<const uint32_t*>(krow + ks * 16 + 8);
        mma16816<T>(s[nt], qa[ks], b0, b1);
      }
    }

    // Masks and the online softmax; each row lives in the 4 lanes of a quad.
    float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
    for (int nt = 0; nt < 8; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int c = nt * 8 + 2 * t + (e & 1), key = key_base + c, row = e < 2 ? r0 : r1;
        const bool ok = valid[c] && (!p.causal || key <= row + causal_offset);
        s[nt][e] = ok ? s[nt][e] * scale_log2 : -INFINITY;
      }
      mx0 = fmaxf(mx0, fmaxf(s[nt][0], s[nt][1]));
      mx1 = fmaxf(mx1, fmaxf(s[nt][2], s[nt][3]));
    }
    mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
    mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
    mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
    mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
    const float n0 = fmaxf(m0, mx0), n1 = fmaxf(m1, mx1);
    // While a row has seen only masked keys its max is -inf; subtracting 0 instead keeps
    // exp2(-inf - ...) at 0 rather than NaN.
    const float u0 = n0 == -INFINITY ? 0.0f : n0, u1 = n1 == -INFINITY ? 0.0f : n1;
    const float a0 = exp2f(m0 - u0), a1 = exp2f(m1 - u1);
    m0 = n0;
    m1 = n1;
    float ps0 = 0.0f, ps1 = 0.0f;
#pragma unroll
    for (int nt = 0; nt < 8; ++nt) {
      s[nt][0] = exp2f(s[nt][0] - u0);
      s[nt][1] = exp2f(s[nt][1] - u0);
      s[nt][2] = exp2f(s[nt][2] - u1);
      s[nt][3] = exp2f(s[nt][3] - u1);
      ps0 += s[nt][0] + s[nt][1];
      ps1 += s[nt][2] + s[nt][3];
    }
    l0 = l0 * a0 + ps0;  // per-lane partial sums; the quad is reduced once at the end
    l1 = l1 * a1 + ps1;
#pragma unroll
    for (int i = 0; i < NO; ++i) {
      o[i][0] *= a0;
      o[i][1] *= a0;
      o[i][2] *= a1;
      o[i][3] *= a1;
    }

    // O += P·V: the S accumulator layout is exactly the A-fragment layout of P.
#pragma unroll
    for (int kk = 0; kk < kCols / 16; ++kk) {
      const uint32_t pa[4] = {pack2<T>(s[2 * kk][0], s[2 * kk][1]), pack2<T>(s[2 * kk][2], s[2 * kk][3]),
                              pack2<T>(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                              pack2<T>(s[2 * kk + 1][2], s[2 * kk + 1][3])};
      const T* vrow = &Vs[(kk * 16 + (lane & 15)) * VSTR];
#pragma unroll
      for (int nd = 0; nd < NO; ++nd) {
        uint32_t b0, b1;
        ldmatrix_x2_trans(b0, b1, vrow + nd * 8);
        mma16816<T>(o[nd], pa, b0, b1);
      }
    }
    __syncthreads();  // stage st is refilled by the next iteration's prefetch
  }

  l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
  l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
  l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
  l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
  const float i0 = l0 > 0.0f ? 1.0f / l0 : 0.0f, i1 = l1 > 0.0f ? 1.0f / l1 : 0.0f;
  T* out = static_cast<T*>(p.o) + (static_cast<int64_t>(b) * p.H + h) * p.Lq * D;
#pragma unroll
  for (int nd = 0; nd < NO; ++nd) {
    const int c = nd * 8 + 2 * t;
    if (r0 < p.Lq)
      *reinterpret_cast<uint32_t*>(out + static_cast<int64_t>(r0) * D + c) = pack2<T>(o[nd][0] * i0, o[nd][1] * i0);
    if (r1 < p.Lq)
      *reinterpret_cast<uint32_t*>(out + static_cast<int64_t>(r1) * D + c) = pack2<T>(o[nd][2] * i1, o[nd][3] * i1);
  }
}

}  // namespace flash

/// True when the fused kernel handles this dtype and head dim.
inline bool flash_attention_supported(DType t, int64_t D) {
  return (t == DType::f16 || t == DType::bf16) && (D == 64 || D == 72 || D == 128);
}

/// Launches the fused kernel. `vec` enables 16-byte K/V loads: the caller checks that
/// the K/V base pointers are 16-byte aligned and their strides multiples of 8 elements.
template <class T>
void flash_attention(const AttentionParams& p, int D, bool vec, cudaStream_t s) {
  if (p.B == 0 || p.H == 0 || p.Lq == 0) return;
  const dim3 grid((p.Lq + flash::kRows - 1) / flash::kRows, p.H, p.B);
  SC_CHECK(p.H <= 65535 && p.B <= 65535, Errc::unsupported,
           "attention: batch " << p.B << " or heads " << p.H << " beyond 65535; split the batch");
  auto launch = [&](auto kernel, size_t smem) {
    // Above 48 KiB a kernel must opt in to its dynamic shared memory (per device; cheap to repeat).
    SC_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
    kernel<<<grid, flash::kWarps * 32, smem, s>>>(p, vec);
    SC_CUDA_CHECK_LAUNCH();
  };
  switch (D) {
    case 64: launch(flash::flash_attention_kernel<T, 64>, flash::flash_smem_bytes<T, 64>()); break;
    case 72: launch(flash::flash_attention_kernel<T, 72>, flash::flash_smem_bytes<T, 72>()); break;
    case 128: launch(flash::flash_attention_kernel<T, 128>, flash::flash_smem_bytes<T, 128>()); break;
    default: SC_FAIL(Errc::internal, "flash_attention: head dim " << D);
  }
}

/// P[row, :] = masked softmax of S[row, :] (f32 scores already scaled), written as T.
/// Rows are (batch·head, query) of a chunk whose first batch·head is `bh0`.
template <class T>
__global__ void masked_softmax_kernel(T* __restrict__ P, const float* __restrict__ S, int Lq, int Lk, int H,
                                      int64_t bh0, bool causal, const void* mask, int mask_code) {
  __shared__ float scratch[32];
  const int64_t row = blockIdx.x;
  const int64_t bh = bh0 + row / Lq;
  const int i = static_cast<int>(row % Lq);
  const int64_t b = bh / H;
  const float* s = S + row * Lk;
  T* out = P + row * Lk;
  auto visible = [&](int j) {
    if (causal && j > i + (Lk - Lq)) return false;
    return !mask || load_any(mask, b * Lk + j, mask_code) != 0.0f;
  };
  float m = -INFINITY;
  for (int j = threadIdx.x; j < Lk; j += blockDim.x)
    if (visible(j)) m = fmaxf(m, s[j]);
  m = block_max(m, scratch);
  float sum = 0.0f;
  for (int j = threadIdx.x; j < Lk; j += blockDim.x)
    if (visible(j)) sum += expf(s[j] - m);
  sum = block_sum(sum, scratch);
  const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
  for (int j = threadIdx.x; j < Lk; j += blockDim.x)
    out[j] = from_f32<T>(visible(j) && inv > 0.0f ? expf(s[j] - m) * inv : 0.0f);
}

template <class T>
void masked_softmax(T* P, const float* S, int64_t rows, int Lq, int Lk, int H, int64_t bh0, bool causal,
                    const void* mask, DType mask_dtype, cudaStream_t s) {
  if (rows == 0) return;
  masked_softmax_kernel<T><<<static_cast<unsigned>(rows), 256, 0, s>>>(P, S, Lq, Lk, H, bh0, causal, mask,
                                                                        dtype_code(mask_dtype));
  SC_CUDA_CHECK_LAUNCH();
}

}  // namespace stagecraft::kernels::cuda

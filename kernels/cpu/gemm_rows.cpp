// A row-invariant GEMM for small products: y = x · wᵀ (+ b) over w packed in panels of 16
// outputs (gemm_rows.hpp). Each output is one FMA chain over k in order, which is what a
// broadcast micro-kernel computes anyway: a tile of 6 rows x 16 outputs keeps 12 AVX2
// accumulators, and each k loads one 64-byte panel row and broadcasts 6 values of x for
// 12 FMAs, so the loop is FMA-bound, needs no horizontal sums, and streams each panel
// sequentially. Rows are only tiled: a tail of fewer rows, a tail of fewer outputs (masked
// stores) or another thread computes an output with exactly the same operations. The
// scalar fallback does the same std::fma chain, so it gives the same bits.
//
// It replaced a dot-product kernel (a row of x against a row of w in 8 lanes, then a fixed
// horizontal sum; 3 x 3 tiles, w unpacked) that loaded 6 vectors per 9 FMAs from six
// streams: the shipped model's denoiser step went from 4.4 to 3.6 ms per job alone and
// from 4.3 to 3.4 ms per job at 8 jobs (bench_pipeline --batching --step-batches, 1
// thread, CPU time). Where the CPU has AVX-512 (this 2-core Xeon does) the same chains run
// 16 lanes wide (below): 3.0 -> 2.1 ms per job alone and 2.95 -> 1.9-2.0 ms per job at 8.
#include "kernels/cpu/gemm_rows.hpp"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <new>
#include <string>
#include <utility>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define SC_GEMM_ROWS_AVX2 1
#else
#define SC_GEMM_ROWS_AVX2 0
#endif

#include "kernels/cpu/common.hpp"
#include "kernels/cpu/weight_cache_support.hpp"

namespace stagecraft::kernels::cpu {
namespace {

constexpr int kR = 6;             // rows of x per tile
constexpr int64_t kP = 16;        // outputs per panel (and per tile)
constexpr int64_t kBlockM = 48;   // rows per task: their 48 x K slice of x stays in L1/L2 across panels
constexpr int64_t kGroup512 = 4;  // AVX-512 path: panels per task (a tile's 64 outputs), when there are enough
// AVX-512 path: k blocks of 1152, so a group of panels' slice (1152 x 64 floats, 288 KiB)
// stays in L2 while every row tile of a super-block passes over it, and the super-block's k
// slices of x (~1 MiB, half this CPU's L2) stay in L2 across groups. Measured on PixArt's
// call (process CPU time, 3 sessions): k blocks of 256 (an L1-sized slice) cost 4-5% more
// than 1152, as every 8-row tile then reloads and stores its 16 accumulators 4.5 times over
// K = 1152; 2304 and unblocked (K = 4608 in one pass) cost 3-9% more.
constexpr int64_t kBlockK512 = 1152;
constexpr int64_t kSuperBlockBytes = 1 << 20;
constexpr int64_t kPrefetchMinRows = 96;  // rows sharing a group's slice before tasks512 prefetches the next one
// Chunks per thread, claimed as threads come free (parallel_for): a lone job's GEMM region
// is ~0.1 ms, and with one chunk per thread the caller waited for the worker at the end of
// ~20% of them (perf, the shipped model), the worker starting late or slowed by pulling
// the rows the caller had just written. Bits do not depend on the chunks (row tiles only).
constexpr int kChunksPerThread = 4;

// Applies the epilogue to y[m0 .. m0 + rows)[n0 .. n0 + cols), the block a task just finished.
void apply_epilogue(const GemmRowsEpilogue& e, float* y, int64_t N, int64_t m0, int64_t rows, int64_t n0,
                    int64_t cols) {
  using Kind = GemmRowsEpilogue::Kind;
  for (int64_t m = m0; m < m0 + rows; ++m) {
    float* yr = y + m * N + n0;
    switch (e.kind) {
      case Kind::none: return;
      case Kind::gelu_tanh: gelu_f32(yr, yr, cols, true); break;
      case Kind::gelu_erf: gelu_f32(yr, yr, cols, false); break;
      case Kind::residual: {
        const float* res = e.residual + m * N + n0;
        if (e.gate) {
          const float* g = e.gate + (m / e.gate_rows) * e.gate_stride + n0;
          for (int64_t c = 0; c < cols; ++c) yr[c] = res[c] + g[c] * yr[c];
        } else {
          for (int64_t c = 0; c < cols; ++c) yr[c] = res[c] + yr[c];
        }
        break;
      }
    }
  }
}

#if SC_GEMM_ROWS_AVX2
__m256i lane_mask(int64_t n) {  // lanes < n set
  const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(std::clamp<int64_t>(n, 0, 8))), idx);
}

// One row of a tile: acc += x[k] * panel row k. Named accumulators (not arrays) keep GCC
// from spilling them to the stack on every iteration.
#define SC_ROW_FMA(i)                                            \
  if constexpr (R > i) {                                         \
    const __m256 xb = _mm256_broadcast_ss(x + (i) * K + k);      \
    c##i##0 = _mm256_fmadd_ps(xb, w0, c##i##0);                  \
    c##i##1 = _mm256_fmadd_ps(xb, w1, c##i##1);                  \
  }
#define SC_ROW_STORE(i)                                          \
  if constexpr (R > i) {                                         \
    if (bias) {                                                  \
      c##i##0 = _mm256_add_ps(c##i##0, b0);                      \
      c##i##1 = _mm256_add_ps(c##i##1, b1);                      \
    }                                                            \
    if (Tail) {                                                  \
      _mm256_maskstore_ps(y + (i) * N, m0, c##i##0);             \
      _mm256_maskstore_ps(y + (i) * N + 8, m1, c##i##1);         \
    } else {                                                     \
      _mm256_storeu_ps(y + (i) * N, c##i##0);                    \
      _mm256_storeu_ps(y + (i) * N + 8, c##i##1);                \
    }                                                            \
  }
#endif

// y[r][0..cols) for r < R from one panel (cols <= 16; Tail when cols < 16).
template <int R, bool Tail>
void tile(const float* x, int64_t K, const float* panel, const float* bias, float* y, int64_t N, int64_t cols) {
#if SC_GEMM_ROWS_AVX2
  __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
  __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
  for (int64_t k = 0; k < K; ++k) {
    const __m256 w0 = _mm256_load_ps(panel + k * kP), w1 = _mm256_load_ps(panel + k * kP + 8);
    SC_ROW_FMA(0)
    SC_ROW_FMA(1)
    SC_ROW_FMA(2)
    SC_ROW_FMA(3)
    SC_ROW_FMA(4)
    SC_ROW_FMA(5)
  }
  const __m256i m0 = lane_mask(Tail ? cols : 8), m1 = lane_mask(Tail ? cols - 8 : 8);
  __m256 b0 = c00, b1 = c00;
  if (bias) {
    b0 = Tail ? _mm256_maskload_ps(bias, m0) : _mm256_loadu_ps(bias);
    b1 = Tail ? _mm256_maskload_ps(bias + 8, m1) : _mm256_loadu_ps(bias + 8);
  }
  SC_ROW_STORE(0)
  SC_ROW_STORE(1)
  SC_ROW_STORE(2)
  SC_ROW_STORE(3)
  SC_ROW_STORE(4)
  SC_ROW_STORE(5)
#else
  for (int r = 0; r < R; ++r)
    for (int64_t c = 0; c < (Tail ? cols : kP); ++c) {
      float s = 0.0f;
      for (int64_t k = 0; k < K; ++k) s = std::fma(x[r * K + k], panel[k * kP + c], s);
      y[r * N + c] = bias ? s + bias[c] : s;
    }
#endif
}

template <bool Tail>
void panel_rows(const float* x, int64_t rows, int64_t K, const float* panel, const float* bias, float* y, int64_t N,
                int64_t cols) {
  int64_t m = 0;
  for (; m + kR <= rows; m += kR) tile<kR, Tail>(x + m * K, K, panel, bias, y + m * N, N, cols);
  const float* xr = x + m * K;
  float* yr = y + m * N;
  switch (rows - m) {
    case 5: tile<5, Tail>(xr, K, panel, bias, yr, N, cols); break;
    case 4: tile<4, Tail>(xr, K, panel, bias, yr, N, cols); break;
    case 3: tile<3, Tail>(xr, K, panel, bias, yr, N, cols); break;
    case 2: tile<2, Tail>(xr, K, panel, bias, yr, N, cols); break;
    case 1: tile<1, Tail>(xr, K, panel, bias, yr, N, cols); break;
    default: break;
  }
}

// ---------------------------------------------------------------- AVX-512

// The same chains 16 lanes wide, over a group of four panels at once: a tile of 6 rows x 64
// outputs keeps 24 of the 32 zmm registers as accumulators, and each k loads four panel rows
// and broadcasts 6 values of x for 24 FMAs (10 loads for 24 FMAs; the 8 x 32 tiles before
// session 8 needed 10 for 16). A group's last panels take 8 x 48 (3 panels) or 8 x 32 / 16.
// Measured (bench_pixart_ops, 2 threads, cold weights): 261-294 -> 281-303 GFLOP/s at
// PixArt-alpha's four shapes; the transformer call 5-8% faster (docs/kernels.md).
// Compiled for AVX-512F whatever the build's -march and chosen at run time, so an AVX2
// build uses it where the CPU has it. An output's
// operations are those of the AVX2 and scalar code (fma over k in order, then + bias), so
// the bits do not depend on which kernel ran.
#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>  // (also when the build itself targets no AVX2)
#define SC_GEMM_ROWS_AVX512 1
#define SC_AVX512 __attribute__((target("avx512f")))

// Rows per tile for NP panels: 24 accumulators at most (the other 8 zmm hold the panel
// rows and the broadcast).
template <int NP>
constexpr int kRows512 = NP >= 4 ? 6 : 8;

// Part of the next group's k slice, brought into L2 a share per tile while this group
// computes: `lines` cache lines of each panel in `panel` (null past the last panel).
struct Prefetch {
  const char* panel[kGroup512] = {};
  int64_t lines = 0;
};

SC_AVX512 inline void prefetch_share(const Prefetch& pf, int64_t part, int64_t parts) {
  const int64_t l0 = pf.lines * part / parts, l1 = pf.lines * (part + 1) / parts;
  for (int64_t l = l0; l < l1; ++l)
    for (const char* p : pf.panel)
      if (p) _mm_prefetch(p + l * 64, _MM_HINT_T1);
}

template <int R, int NP>
SC_AVX512 void tile512(const float* x, int64_t K, const float* panel, const float* bias, float* y, int64_t N,
                       int64_t cols, int64_t k0, int64_t k1) {
  const auto mask = [](int64_t n) {
    return static_cast<__mmask16>(n >= 16 ? 0xFFFF : n <= 0 ? 0 : (1u << n) - 1);
  };
  // A later k block resumes the chains from y: the f32 partial sums round-trip exactly, so
  // the result is the same single FMA chain over k in order as an unblocked loop.
  __m512 acc[R][NP];
  for (int q = 0; q < NP; ++q) {
    const __mmask16 m = mask(cols - 16 * q);
    for (int r = 0; r < R; ++r) acc[r][q] = k0 > 0 ? _mm512_maskz_loadu_ps(m, y + r * N + 16 * q) : _mm512_setzero_ps();
  }
  const int64_t next_panel = K * kP;  // floats from one panel to the next
  for (int64_t k = k0; k < k1; ++k) {
    __m512 wk[NP];
    for (int q = 0; q < NP; ++q) wk[q] = _mm512_load_ps(panel + q * next_panel + k * kP);
    for (int r = 0; r < R; ++r) {
      const __m512 xb = _mm512_set1_ps(x[r * K + k]);
      for (int q = 0; q < NP; ++q) acc[r][q] = _mm512_fmadd_ps(xb, wk[q], acc[r][q]);
    }
  }
  const bool add_bias = bias && k1 == K;
  for (int q = 0; q < NP; ++q) {
    const __mmask16 m = mask(cols - 16 * q);
    const __m512 b = add_bias ? _mm512_maskz_loadu_ps(m, bias + 16 * q) : _mm512_setzero_ps();
    for (int r = 0; r < R; ++r) {
      __m512 v = acc[r][q];
      if (add_bias) v = _mm512_add_ps(v, b);
      _mm512_mask_storeu_ps(y + r * N + 16 * q, m, v);
    }
  }
}

template <int NP>
SC_AVX512 void panel_rows512(const float* x, int64_t rows, int64_t K, const float* panel, const float* bias, float* y,
                             int64_t N, int64_t cols, int64_t k0, int64_t k1, const Prefetch& pf) {
  constexpr int TR = kRows512<NP>;
  const int64_t tiles = (rows + TR - 1) / TR;
  int64_t m = 0;
  for (; m + TR <= rows; m += TR) {
    if (pf.lines) prefetch_share(pf, m / TR, tiles);
    tile512<TR, NP>(x + m * K, K, panel, bias, y + m * N, N, cols, k0, k1);
  }
  if (m < rows && pf.lines) prefetch_share(pf, tiles - 1, tiles);
  const float* xr = x + m * K;
  float* yr = y + m * N;
  switch (rows - m) {
    case 7: tile512<7, NP>(xr, K, panel, bias, yr, N, cols, k0, k1); break;
    case 6: tile512<6, NP>(xr, K, panel, bias, yr, N, cols, k0, k1); break;
    case 5: tile512<5, NP>(xr, K, panel, bias, yr, N, cols, k0, k1); break;
    case 4: tile512<4, NP>(xr, K, panel, bias, yr, N, cols, k0, k1); break;
    case 3: tile512<3, NP>(xr, K, panel, bias, yr, N, cols, k0, k1); break;
    case 2: tile512<2, NP>(xr, K, panel, bias, yr, N, cols, k0, k1); break;
    case 1: tile512<1, NP>(xr, K, panel, bias, yr, N, cols, k0, k1); break;
    default: break;
  }
}

// Tasks [t0, t1) of (48-row block, group of kGroup512 panels), group major: t = group *
// row_blocks + block. The chunk is computed by row super-blocks and k blocks (kBlockK512):
// within one, a group's slice of panels is reused by every row tile before the next group,
// and the rows' slices of x by every group. (Row-block major, as before, streamed the whole
// weight once per 48 rows.)
// An output's chain is still one FMA chain over k in order (tile512 resumes it from y).
SC_AVX512 void tasks512(const float* x, const PackedWeight& w, const float* bias, float* y, int64_t M,
                        const GemmRowsEpilogue& epi, int64_t group, int64_t t0, int64_t t1) {
  const int64_t N = w.N, K = w.K, np = (N + kP - 1) / kP, mb = (M + kBlockM - 1) / kBlockM;
  const int64_t kc = kBlockK512;
  const int64_t sb_blocks = std::max<int64_t>(1, kSuperBlockBytes / (kc * 4 * kBlockM));
  const int64_t first_group = t0 / mb, last_group = (t1 - 1) / mb;
  // The k slice [k0, k1) of group q's panels: (k1 - k0) cache lines each.
  auto slice = [&](int64_t q, int64_t k0, int64_t k1) {
    Prefetch pf;
    for (int64_t g = 0; g < group; ++g)
      if (q * group + g < np) pf.panel[g] = reinterpret_cast<const char*>(w.panel(q * group + g) + k0 * kP);
    pf.lines = k1 - k0;
    return pf;
  };
  for (int64_t sb0 = 0; sb0 < mb; sb0 += sb_blocks)
    for (int64_t k0 = 0; k0 < K; k0 += kc) {
      const int64_t k1 = std::min(K, k0 + kc), sb_n = std::min(sb_blocks, mb - sb0);
      const int64_t sb_rows = std::min(M, (sb0 + sb_n) * kBlockM) - sb0 * kBlockM;
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t blk = t % mb;
        if (blk < sb0 || blk >= sb0 + sb_blocks) continue;
        const int64_t m0 = blk * kBlockM, rows = std::min(M, m0 + kBlockM) - m0;
        const int64_t q = t / mb, p = q * group, n0 = p * kP, cols = std::min(N, n0 + group * kP) - n0;
        const float* b = bias ? bias + n0 : nullptr;
        // While this group's row blocks run, the chunk's next group (or its first group at
        // the next k block, or at the next super-block's first) is fetched into L2, a share
        // per row tile, so its slice does not arrive from memory on demand: the weights of a
        // transformer call (~80 MB a layer at PixArt's width) come from DRAM, not from cache.
        // With few rows a group's compute is too short to hide its next slice, and the GEMM
        // is bound by reading the weights anyway: prefetching there only competed with the
        // demand loads (M = 8, N = 6912: 2.7 -> 3.5-6 ms), so it is left to the hardware.
        Prefetch pf;
        if (sb_rows < kPrefetchMinRows) {
        } else if (q < last_group) pf = slice(q + 1, k0, k1);
        else if (k1 < K) pf = slice(first_group, k1, std::min(K, k1 + kc));
        else if (sb0 + sb_blocks < mb) pf = slice(first_group, 0, std::min(K, kc));
        if (pf.lines) {  // this row block's share of it
          const int64_t i = blk - sb0, l0 = pf.lines * i / sb_n, l1 = pf.lines * (i + 1) / sb_n;
          for (const char*& panel : pf.panel)
            if (panel) panel += l0 * 64;
          pf.lines = l1 - l0;
        }
        const float* xs = x + m0 * K;
        float* ys = y + m0 * N + n0;
        switch (std::min(group, np - p)) {  // the panels of the group (fewer at N's end)
          case 4: panel_rows512<4>(xs, rows, K, w.panel(p), b, ys, N, cols, k0, k1, pf); break;
          case 3: panel_rows512<3>(xs, rows, K, w.panel(p), b, ys, N, cols, k0, k1, pf); break;
          case 2: panel_rows512<2>(xs, rows, K, w.panel(p), b, ys, N, cols, k0, k1, pf); break;
          default: panel_rows512<1>(xs, rows, K, w.panel(p), b, ys, N, cols, k0, k1, pf); break;
        }
        if (k1 == K) apply_epilogue(epi, y, N, m0, rows, n0, cols);
      }
    }
}

bool cpu_has_avx512() {
  static const bool yes = [] {
    if (!__builtin_cpu_supports("avx512f")) return false;
    const char* e = std::getenv("STAGECRAFT_GEMM_ROWS_AVX512");
    return !(e && std::string(e) == "0");
  }();
  return yes;
}
#else
#define SC_GEMM_ROWS_AVX512 0
bool cpu_has_avx512() { return false; }
#endif

// ---------------------------------------------------------------- packed-weight cache

// Few samples: they are read on every call and miss the cache (the kernel reads the packed
// copy, never w): 32 took ~1% of a step.
// The default budget is a quarter of the machine's memory (at least 512 MB): every linear
// layer of the denoiser goes through gemm_rows, so a model whose projections do not fit
// packs the rest on every call, ~20% more CPU per transformer call (docs/kernels.md), and a
// full-size PixArt-α's 28 layers take ~2.4 GB. The price is a second copy of those weights.
WeightCache<PackedWeight>& cache() {
  static WeightCache<PackedWeight> c("STAGECRAFT_GEMM_ROWS_CACHE_MB", std::max(512LL, physical_memory_mb() / 4), 8);
  return c;
}

}  // namespace

std::shared_ptr<const PackedWeight> pack_weight(const Tensor& w) {
  const int64_t N = w.size(0), K = w.size(1), np = (N + kP - 1) / kP;
  auto r = std::make_shared<PackedWeight>();
  r->N = N;
  r->K = K;
  const size_t bytes = static_cast<size_t>(std::max<int64_t>(1, np * K * kP)) * 4;
  r->data = alloc_weight_floats(bytes);
  F32In wf(w);
  const float* src = wf.data();
  float* dst = r->data.get();
  // In k blocks of 256: the block's 16 KiB of panel and of the 16 source rows stay in L1
  // while each row is scattered into it (unblocked, every row's pass over a K x 64-byte panel
  // missed L1 on each k: packing per call, when the cache is off or full, cost ~3x more).
  constexpr int64_t kPackBlock = 256;
  for (int64_t p = 0; p < np; ++p) {
    float* pp = dst + p * K * kP;
    const int64_t cols = std::min(kP, N - p * kP);
    if (cols < kP) std::fill(pp, pp + K * kP, 0.0f);
    for (int64_t k0 = 0; k0 < K; k0 += kPackBlock) {
      const int64_t k1 = std::min(K, k0 + kPackBlock);
      for (int64_t c = 0; c < cols; ++c) {
        const float* row = src + (p * kP + c) * K;
        for (int64_t k = k0; k < k1; ++k) pp[k * kP + c] = row[k];
      }
    }
  }
  return r;
}

std::shared_ptr<const PackedWeight> packed_weight_cached(const Tensor& w) {
  return cache().get(
      w, 0, [&] { return pack_weight(w); },
      [](const PackedWeight& p) { return (p.N + kP - 1) / kP * kP * p.K * 4; });
}

PackedWeightCacheStats packed_weight_cache_stats() { return cache().stats(); }

void packed_weight_cache_clear() { cache().clear(/*reset_counts=*/true); }

bool gemm_rows_avx512_available() { return cpu_has_avx512(); }

void gemm_rows(const float* x, const PackedWeight& w, const float* bias, float* y, int64_t M, GemmRowsIsa isa,
               const GemmRowsEpilogue& epilogue) {
  const int64_t N = w.N, K = w.K;
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < N; ++n) y[m * N + n] = bias ? 0.0f + bias[n] : 0.0f;
    apply_epilogue(epilogue, y, N, 0, M, 0, N);
    return;
  }
  const int64_t mb = (M + kBlockM - 1) / kBlockM, np = (N + kP - 1) / kP;
  // Tasks of (48-row block, panel or group of panels): row block major on AVX2, so a chunk of
  // tasks reuses its rows of x across panels; group major, in k blocks, on AVX-512
  // (tasks512), groups of 4 panels where that still leaves 16 tasks to share out, else pairs
  // (a lone job's 32 rows times 12 panels would give 3 tasks to 2 threads). Split across
  // threads only when a chunk gets ~1 MFLOP, so small products do not pay a thread hand-off
  // (which costs more than they do on a busy machine). The grouping never changes the bits.
  const bool wide = isa == GemmRowsIsa::best && cpu_has_avx512();
  const int64_t group = mb * ((np + kGroup512 - 1) / kGroup512) >= 16 ? kGroup512 : 2;
  const int64_t per_task = wide ? group : 1, tasks = mb * ((np + per_task - 1) / per_task);
  const int64_t flops_per_task = 2 * std::min(kBlockM, M) * kP * per_task * K;
  const int64_t grain = std::max<int64_t>(1, (1 << 20) / flops_per_task);
#if SC_GEMM_ROWS_AVX512
  if (wide) {
    parallel_for(
        tasks, grain, [&](int64_t t0, int64_t t1) { tasks512(x, w, bias, y, M, epilogue, group, t0, t1); },
        kChunksPerThread);
    return;
  }
#endif
  parallel_for(tasks, grain, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t m0 = (t / np) * kBlockM, rows = std::min(M, m0 + kBlockM) - m0;
      const int64_t p = t % np, n0 = p * kP, cols = std::min(N, n0 + kP) - n0;
      const float* b = bias ? bias + n0 : nullptr;
      if (cols == kP) panel_rows<false>(x + m0 * K, rows, K, w.panel(p), b, y + m0 * N + n0, N, cols);
      else panel_rows<true>(x + m0 * K, rows, K, w.panel(p), b, y + m0 * N + n0, N, cols);
      apply_epilogue(epilogue, y, N, m0, rows, n0, cols);
    }
  }, kChunksPerThread);
}

}  // namespace stagecraft::kernels::cpu

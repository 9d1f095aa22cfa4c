// Winograd F(4x4, 3x3) and F(2x2, 3x3) for the CPU backend (see winograd.hpp for the
// algebra). The (m+2)^2 products U[ξ]·V[ξ] are single-threaded OpenBLAS sgemm calls spread
// over our pool, one GEMM per task; the tile transforms are our own loops over chunks of 64
// tiles held as [coefficient][tile] arrays, so every step is a contiguous loop the compiler
// vectorises and the chunk (2 x 9 KiB for F(4x4)) stays in L1. Transforms run in
// parallel_for over channels. One pool runs all three steps, so no other threads spin
// beside it (blas.hpp).
#include "kernels/cpu/winograd.hpp"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <tuple>
#include <vector>

#include "core/error.hpp"
#include "core/storage.hpp"
#include "kernels/cpu/blas.hpp"
#include "kernels/cpu/common.hpp"
#include "kernels/cpu/weight_cache_support.hpp"

namespace stagecraft::kernels::cpu {
namespace {

// Lavin & Gray's matrices (constexpr, so the unrolled transforms fold them into the code). F(4x4) uses the points 0, ±1, ±2 and ∞; its Aᵀ has entries up to
// 8, which is where its larger rounding error comes from (measured in docs/kernels.md).
template <int M>
struct Mats;

template <>
struct Mats<4> {
  static constexpr int A = 6;
  static constexpr float BT[6][6] = {{4, 0, -5, 0, 1, 0},  {0, -4, -4, 1, 1, 0}, {0, 4, -4, -1, 1, 0},
                                     {0, -2, -1, 2, 1, 0}, {0, 2, -1, -2, 1, 0}, {0, 4, 0, -5, 0, 1}};
  static constexpr double G[6][3] = {{1.0 / 4, 0, 0},
                                     {-1.0 / 6, -1.0 / 6, -1.0 / 6},
                                     {-1.0 / 6, 1.0 / 6, -1.0 / 6},
                                     {1.0 / 24, 1.0 / 12, 1.0 / 6},
                                     {1.0 / 24, -1.0 / 12, 1.0 / 6},
                                     {0, 0, 1}};
  static constexpr float AT[4][6] = {{1, 1, 1, 1, 1, 0}, {0, 1, -1, 2, -2, 0}, {0, 1, 1, 4, 4, 0}, {0, 1, -1, 8, -8, 1}};
};

template <>
struct Mats<2> {
  static constexpr int A = 4;
  static constexpr float BT[4][4] = {{1, 0, -1, 0}, {0, 1, 1, 0}, {0, -1, 1, 0}, {0, 1, 0, -1}};
  static constexpr double G[4][3] = {{1, 0, 0}, {0.5, 0.5, 0.5}, {0.5, -0.5, 0.5}, {0, 0, 1}};
  static constexpr float AT[2][4] = {{1, 1, 1, 0}, {0, 1, -1, -1}};
};

constexpr int kChunk = 64;  // tiles per transform chunk (one tile row of a 256-px map)
// V and M of one band together at most this many floats (64 MiB), whatever the map. Bands
// of 256 tiles and more keep the 36 GEMMs efficient: at 512 channels, 64x64 and 128x128
// maps ran 8-12% faster than with 32 MiB, and 128 MiB gained nothing more.
constexpr int64_t kScratchFloats = int64_t{16} << 20;

template <int M>
struct Plan {
  static constexpr int A = M + 2, AA = A * A;
  int64_t I, O, H, W;  // H, W: the map the conv runs over (the upsampled one when folded)
  int64_t Hs, Ws;      // the stored input's rows / columns: H, W, or H / 2, W / 2 when folded
  int64_t th, tw;  // tile rows / columns of the image
  int64_t T;       // tiles in the current band (columns of the GEMMs)
};

// Both transforms work on a chunk of up to 64 tiles of the band (across tile rows, so a
// narrow map still fills the chunk): a scalar gather into [coefficient][tile] arrays, then
// one loop over the tiles whose body is the whole transform, unrolled, with Bᵀ / Aᵀ as
// compile-time constants (zeros and ones fold away); GCC vectorises that loop 8 tiles wide.

// The input transform of a chunk gathered by input_tile_chunk, into V (xs: the distance
// between transform points in V). Not inlined, so the folded and the plain gather share
// this one compiled loop: the same instructions, so the same bits (FMA contraction is on).
template <int M>
[[gnu::noinline]] void input_transform(const float (*d)[kChunk], int tc, float* __restrict dst, int64_t xs) {
  using Mt = Mats<M>;
  constexpr int A = M + 2;
  d = static_cast<const float(*)[kChunk]>(__builtin_assume_aligned(d, 64));
#pragma GCC ivdep
  for (int t = 0; t < tc; ++t) {
    float r[A][A], tmp[A][A];
#pragma GCC unroll 36
    for (int k = 0; k < A * A; ++k) r[k / A][k % A] = d[k][t];
#pragma GCC unroll 6
    for (int a = 0; a < A; ++a)
#pragma GCC unroll 6
      for (int j = 0; j < A; ++j) {
        float acc = 0.0f;
#pragma GCC unroll 6
        for (int i = 0; i < A; ++i)
          if (Mt::BT[a][i] != 0.0f) acc += Mt::BT[a][i] * r[i][j];
        tmp[a][j] = acc;
      }
#pragma GCC unroll 6
    for (int a = 0; a < A; ++a)
#pragma GCC unroll 6
      for (int b = 0; b < A; ++b) {
        float acc = 0.0f;
#pragma GCC unroll 6
        for (int j = 0; j < A; ++j)
          if (Mt::BT[b][j] != 0.0f) acc += tmp[a][j] * Mt::BT[b][j];
        dst[(a * A + b) * xs + t] = acc;
      }
  }
}

// V[ξ][c][t0 + t] for the band tiles t0 .. t0 + tc of channel plane xc. With Up, xc is the
// half-size plane and the map is its nearest 2x upsampling: row y of the map is row y / 2 of
// xc with every value twice, so the gather reads xc at (y / 2, x / 2) and fills d with the
// values a gather over the upsampled map would; the transform after it is the same code.
template <int M, bool Up>
void input_tile_chunk(const Plan<M>& p, const float* xc, int64_t tr0, int64_t t0, int tc, float* v, int64_t c) {
  constexpr int A = M + 2;
  alignas(64) float d[A * A][kChunk];
  // The gather, one run of tiles of the same tile row at a time: each of the 6 input rows is
  // copied once into a zero-padded line (the halo and the ragged right edge), and d is then
  // filled by stride-M loops over the tiles, which GCC vectorises; a per-tile gather with
  // bounds checks cost as much as the transform itself.
  alignas(64) float line[M * kChunk + A];
  for (int ts = 0; ts < tc;) {
    const int64_t tr = tr0 + (t0 + ts) / p.tw, tj0 = (t0 + ts) % p.tw;
    const int n = static_cast<int>(std::min<int64_t>(tc - ts, p.tw - tj0));  // tiles in this run
    const int64_t x0 = M * tj0 - 1, len = int64_t{M} * n + 2;
    const int64_t lo = std::max<int64_t>(0, -x0), hi = std::max(lo, std::min<int64_t>(len, p.W - x0));
    for (int i = 0; i < A; ++i) {
      const int64_t y = M * tr - 1 + i;
      if (y < 0 || y >= p.H) {
        for (int j = 0; j < A; ++j)
          for (int t = 0; t < n; ++t) d[i * A + j][ts + t] = 0.0f;
        continue;
      }
      if constexpr (Up) {
        // Map rows 2k and 2k + 1 are both row k of xc: an odd row repeats the gathered
        // values of the row above it (rows 2 and 4 of an F(4x4) tile repeat rows 1 and 3).
        if (i > 0 && (y & 1) == 1) {
          for (int j = 0; j < A; ++j)
            std::memcpy(d[i * A + j] + ts, d[(i - 1) * A + j] + ts, sizeof(float) * static_cast<size_t>(n));
          continue;
        }
        for (int64_t k = 0; k < lo; ++k) line[k] = 0.0f;
        const float* src = xc + (y >> 1) * p.Ws;
        for (int64_t k = lo; k < hi; ++k) line[k] = src[(x0 + k) >> 1];
        for (int64_t k = hi; k < len; ++k) line[k] = 0.0f;
      } else {
        for (int64_t k = 0; k < lo; ++k) line[k] = 0.0f;
        std::memcpy(line + lo, xc + y * p.W + x0 + lo, sizeof(float) * static_cast<size_t>(hi - lo));
        for (int64_t k = hi; k < len; ++k) line[k] = 0.0f;
      }
      for (int j = 0; j < A; ++j) {
        float* __restrict o = d[i * A + j] + ts;
        const float* l = line + j;
        for (int t = 0; t < n; ++t) o[t] = l[M * t];
      }
    }
    ts += n;
  }
  input_transform<M>(d, tc, v + c * p.T + t0, p.I * p.T);
}

// y[o] for the band tiles t0 .. t0 + tc, from M[ξ][o][t0 + t].
template <int M>
void output_tile_chunk(const Plan<M>& p, const float* mbuf, int64_t o, int64_t tr0, int64_t t0, int tc, float bias,
                       float* yo) {
  using Mt = Mats<M>;
  constexpr int A = M + 2;
  alignas(64) float out[M * M][kChunk];
  const float* __restrict src = mbuf + o * p.T + t0;
  const int64_t xs = p.O * p.T;
#pragma GCC ivdep
  for (int t = 0; t < tc; ++t) {
    float r[A][A], tmp[M][A];
#pragma GCC unroll 36
    for (int k = 0; k < A * A; ++k) r[k / A][k % A] = src[k * xs + t];
#pragma GCC unroll 6
    for (int a = 0; a < M; ++a)
#pragma GCC unroll 6
      for (int j = 0; j < A; ++j) {
        float acc = 0.0f;
#pragma GCC unroll 6
        for (int i = 0; i < A; ++i)
          if (Mt::AT[a][i] != 0.0f) acc += Mt::AT[a][i] * r[i][j];
        tmp[a][j] = acc;
      }
#pragma GCC unroll 6
    for (int a = 0; a < M; ++a)
#pragma GCC unroll 6
      for (int b = 0; b < M; ++b) {
        float acc = bias;
#pragma GCC unroll 6
        for (int j = 0; j < A; ++j)
          if (Mt::AT[b][j] != 0.0f) acc += tmp[a][j] * Mt::AT[b][j];
        out[a * M + b][t] = acc;
      }
  }
  for (int t = 0; t < tc; ++t) {
    const int64_t tr = tr0 + (t0 + t) / p.tw, tj = (t0 + t) % p.tw;
    const int64_t y0 = M * tr, x0 = M * tj;
    const int rows = static_cast<int>(std::min<int64_t>(M, p.H - y0)), cols = static_cast<int>(std::min<int64_t>(M, p.W - x0));
    for (int a = 0; a < rows; ++a)
      for (int b = 0; b < cols; ++b) yo[(y0 + a) * p.W + x0 + b] = out[a * M + b][t];
  }
}

// Reused per calling thread: allocating (and page-faulting) 64 MiB per call would cost
// several ms, as much as a whole 512-channel 32x32 conv's transforms.
float* scratch(int64_t floats) {
  thread_local std::vector<float> buf;
  if (static_cast<int64_t>(buf.size()) < floats) {
    buf.clear();
    buf.shrink_to_fit();
    buf.resize(static_cast<size_t>(floats));
  }
  return buf.data();
}

template <int M, bool Up>
void conv_impl(const float* x, const WinogradWeights& u, const float* bias, float* y, int64_t N, int64_t H, int64_t W,
               int64_t budget) {
  constexpr int A = M + 2, AA = A * A;
  const int64_t Hs = Up ? H / 2 : H, Ws = Up ? W / 2 : W;
  Plan<M> p{u.I, u.O, H, W, Hs, Ws, (H + M - 1) / M, (W + M - 1) / M, 0};
  // Rows of tiles per band: as many as the scratch budget allows, then evened out over the
  // bands so the last band is not a sliver (GEMM efficiency falls with its column count).
  const int64_t per_row = AA * (p.I + p.O) * p.tw;
  const int64_t max_rows = std::clamp<int64_t>(budget / per_row, 1, p.th);
  const int64_t bands = (p.th + max_rows - 1) / max_rows;
  const int64_t band_rows = (p.th + bands - 1) / bands;
  float* v = scratch(AA * (p.I + p.O) * band_rows * p.tw);
  float* mbuf = v + AA * p.I * band_rows * p.tw;
  for (int64_t n = 0; n < N; ++n) {
    const float* xn = x + n * p.I * Hs * Ws;
    float* yn = y + n * p.O * H * W;
    for (int64_t tr0 = 0; tr0 < p.th; tr0 += band_rows) {
      const int64_t tr1 = std::min(p.th, tr0 + band_rows);
      p.T = (tr1 - tr0) * p.tw;
      parallel_for(p.I, 4, [&](int64_t c0, int64_t c1) {
        for (int64_t c = c0; c < c1; ++c)
          for (int64_t t0 = 0; t0 < p.T; t0 += kChunk)
            input_tile_chunk<M, Up>(p, xn + c * Hs * Ws, tr0, t0, static_cast<int>(std::min<int64_t>(kChunk, p.T - t0)),
                                    v, c);
      });
      // The 36 GEMMs are independent: one single-threaded sgemm per task on our pool, so the
      // same threads run the transforms and the GEMMs (blas.hpp). Each GEMM is whole, so
      // its bytes do not depend on how the tasks were shared out.
      parallel_for(AA, 1, [&](int64_t x0, int64_t x1) {
        for (int64_t xi = x0; xi < x1; ++xi)
          sgemm_serial(false, p.O, p.T, p.I, u.u.get() + xi * p.O * p.I, p.I, v + xi * p.I * p.T, p.T,
                       mbuf + xi * p.O * p.T, p.T);
      });
      parallel_for(p.O, 4, [&](int64_t o0, int64_t o1) {
        for (int64_t o = o0; o < o1; ++o)
          for (int64_t t0 = 0; t0 < p.T; t0 += kChunk)
            output_tile_chunk<M>(p, mbuf, o, tr0, t0, static_cast<int>(std::min<int64_t>(kChunk, p.T - t0)),
                                 bias ? bias[o] : 0.0f, yn + o * H * W);
      });
    }
  }
}

template <int M>
void transform_weights(const float* w, int64_t O, int64_t I, float* u) {
  constexpr int A = M + 2;
  constexpr int kC = 32;  // input channels per step: the loops over them vectorise
  using Mt = Mats<M>;
  // In double: G's thirds and sixths are inexact in f32, and this runs once per weight. The
  // loops run over a block of input channels innermost, so each U[ξ][o] row is written
  // contiguously (a first SD-VAE decode spent ~1 s here with one (o, c) pair at a time).
  parallel_for(O, 8, [&](int64_t o0, int64_t o1) {
    alignas(64) double g[9][kC], gt[A][3][kC];
    for (int64_t o = o0; o < o1; ++o)
      for (int64_t c0 = 0; c0 < I; c0 += kC) {
        const int nc = static_cast<int>(std::min<int64_t>(kC, I - c0));
        for (int cc = 0; cc < nc; ++cc)
          for (int k = 0; k < 9; ++k) g[k][cc] = w[(o * I + c0 + cc) * 9 + k];
        for (int a = 0; a < A; ++a)
          for (int l = 0; l < 3; ++l)
            for (int cc = 0; cc < nc; ++cc)
              gt[a][l][cc] = Mt::G[a][0] * g[l][cc] + Mt::G[a][1] * g[3 + l][cc] + Mt::G[a][2] * g[6 + l][cc];
        for (int a = 0; a < A; ++a)
          for (int b = 0; b < A; ++b) {
            float* dst = u + ((a * A + b) * O + o) * I + c0;
            for (int cc = 0; cc < nc; ++cc)
              dst[cc] = static_cast<float>(gt[a][0][cc] * Mt::G[b][0] + gt[a][1][cc] * Mt::G[b][1] +
                                           gt[a][2][cc] * Mt::G[b][2]);
          }
      }
  });
}

// ---------------------------------------------------------------- cache

WeightCache<WinogradWeights>& cache() {
  static WeightCache<WinogradWeights> c("STAGECRAFT_WINOGRAD_CACHE_MB", 1024, 64);
  return c;
}

}  // namespace

std::shared_ptr<const WinogradWeights> winograd_transform_weights(const float* w, int64_t O, int64_t I, int m) {
  auto r = std::make_shared<WinogradWeights>();
  r->m = m;
  r->O = O;
  r->I = I;
  const int A = m + 2;
  r->u.reset(new float[static_cast<size_t>(A * A * O * I)]);
  if (m == 4)
    transform_weights<4>(w, O, I, r->u.get());
  else
    transform_weights<2>(w, O, I, r->u.get());
  return r;
}

std::shared_ptr<const WinogradWeights> winograd_weights_cached(const Tensor& w, int m, bool keep_on_miss) {
  return cache().get(
      w, m,
      [&] {
        F32In wf(w);
        return winograd_transform_weights(wf.data(), w.size(0), w.size(1), m);
      },
      [m](const WinogradWeights& u) { return static_cast<int64_t>((m + 2) * (m + 2)) * u.O * u.I * 4; },
      keep_on_miss);
}

WinogradCacheStats winograd_cache_stats() { return cache().stats(); }

void winograd_cache_clear() { cache().clear(/*reset_counts=*/false); }

void conv3x3_winograd(const float* x, const WinogradWeights& u, const float* bias, float* y, int64_t N, int64_t H,
                      int64_t W, int64_t scratch_floats, bool upsample2x) {
  SC_CHECK(!upsample2x || (H % 2 == 0 && W % 2 == 0), Errc::invalid_argument,
           "conv3x3_winograd: a folded 2x upsample needs an even map, found " << H << "x" << W);
  const int64_t budget = scratch_floats > 0 ? scratch_floats : kScratchFloats;
  if (u.m == 4)
    upsample2x ? conv_impl<4, true>(x, u, bias, y, N, H, W, budget) : conv_impl<4, false>(x, u, bias, y, N, H, W, budget);
  else
    upsample2x ? conv_impl<2, true>(x, u, bias, y, N, H, W, budget) : conv_impl<2, false>(x, u, bias, y, N, H, W, budget);
}

}  // namespace stagecraft::kernels::cpu

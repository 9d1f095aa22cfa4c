#pragma once
// Winograd convolution for 3x3 / stride 1 / padding 1 (internal to kernels/cpu/; conv2d
// picks it by shape, see conv2d.cpp and docs/kernels.md). F(m x m, 3x3) computes an
// m x m output tile from an (m+2) x (m+2) input tile with (m+2)^2 multiplications per
// channel pair instead of 9 m^2: 4x fewer for F(4x4) (m = 4), 2.25x for F(2x2).
//
//   U[ξ][o][c] = (G g[o][c] Gᵀ)[ξ]        weights, transformed once (WinogradWeights)
//   V[ξ][c][t] = (Bᵀ d[c][t] B)[ξ]        input tiles, per band of tiles
//   M[ξ]       = U[ξ] · V[ξ]              (m+2)^2 sgemm calls per band (OpenBLAS)
//   y[o][t]    = Aᵀ M[·][o][t] A (+ bias)
//
// Images are processed one at a time and in bands of whole tile rows, so the scratch
// (V and M of one band) stays bounded (<= 64 MiB whatever the map, kept per calling thread) and an image's result
// never depends on the other images of the batch (the tile grid and every GEMM shape are
// those of the image alone).
#include <cstdint>
#include <memory>

#include "core/tensor.hpp"
#include "kernels/cpu/weight_cache_support.hpp"

namespace stagecraft::kernels::cpu {

/// Transformed weights of one conv: (m+2)^2 matrices of O x I floats.
struct WinogradWeights {
  int m = 4;  ///< output tile size (2 or 4)
  int64_t O = 0, I = 0;
  std::unique_ptr<float[]> u;  ///< [(m+2)^2][O][I]
};

/// Transforms contiguous f32 weights w [O, I, 3, 3] for F(m x m, 3x3), m in {2, 4}.
std::shared_ptr<const WinogradWeights> winograd_transform_weights(const float* w, int64_t O, int64_t I, int m);

/// The transformed weights of `w` from the process-wide cache, transforming them on a miss.
/// Keyed by storage, byte offset, shape, strides and dtype, plus a sample of the values (so a
/// weight written in place after a call is noticed); an entry whose storage has been freed
/// is dropped, so a new tensor at a recycled address never hits a stale entry. The cache is
/// bounded in bytes (STAGECRAFT_WINOGRAD_CACHE_MB, default 1024; 0 turns it off): once full
/// new weights are transformed per call instead of evicting, because a decoder walks its
/// layers in a cycle, where LRU would evict every entry just before its next use.
/// `keep_on_miss` false: use a cached transform if there is one, else transform for this
/// call only (conv2d passes false where the call's tiles amortize the transform: see
/// winograd_worth_caching).
std::shared_ptr<const WinogradWeights> winograd_weights_cached(const Tensor& w, int m, bool keep_on_miss = true);

/// Whether a call with `tiles` output tiles (images x tile rows x tile columns) should keep
/// its transformed weights in the cache. Transforming costs about as much as one GEMM pass
/// over 30-60 tiles' worth of input (it reads the O x I x 9 weights and writes 4x as much
/// for F(4x4)), so below kWinogradAmortizedTiles it is a large share of the call and worth
/// keeping; at or above it, a few percent of the call at most, and keeping the 4x-sized copy
/// would only hold memory: at 512x512 the SD VAE decoder's up-block 1 (seven 512-channel
/// convs at 128x128, 1024 tiles) would add 264 MB to the decode's peak for ~0.6% of its time.
constexpr int64_t kWinogradAmortizedTiles = 1024;
inline bool winograd_worth_caching(int64_t tiles) { return tiles < kWinogradAmortizedTiles; }

/// Entries and bytes held by the cache (for tests and benchmarks); clear drops them all.
using WinogradCacheStats = WeightCacheStats;
WinogradCacheStats winograd_cache_stats();
void winograd_cache_clear();

/// y[N, O, H, W] = conv3x3(x[N, I, H, W]) + bias (bias may be null), stride 1, padding 1,
/// with weights from winograd_transform_weights / winograd_weights_cached. `scratch_floats`
/// bounds V + M of one band (0: the default 16M floats = 64 MiB; tests pass small values to
/// force many bands); one tile row is the least a band holds.
/// `upsample2x`: x is [N, I, H/2, W/2] (H, W even) and the conv runs over its nearest 2x
/// upsampling, which the input gather reads at (y/2, x/2) instead of materialising: the
/// same tiles, products and sums as over the upsampled map, so the same bits.
void conv3x3_winograd(const float* x, const WinogradWeights& u, const float* bias, float* y, int64_t N, int64_t H,
                      int64_t W, int64_t scratch_floats = 0, bool upsample2x = false);

}  // namespace stagecraft::kernels::cpu

namespace stagecraft::kernels::cpu {
/// conv2d 3x3 / stride 1 / padding 1 forced onto Winograd F(m x m, 3x3) whatever the shape
/// (tests and benchmarks; conv2d picks it by shape). Implemented in conv2d.cpp.
Tensor conv2d_winograd(const Tensor& x, const Tensor& w, const Tensor* bias, int m = 4, int64_t scratch_floats = 0);
/// conv2d_winograd(upsample_nearest2x(x), ...) with the upsample folded into the gather,
/// forced whatever the shape (tests; ops::conv2d_upsample2x picks it by shape).
Tensor conv2d_winograd_upsample2x(const Tensor& x, const Tensor& w, const Tensor* bias, int m = 4,
                                  int64_t scratch_floats = 0);
}  // namespace stagecraft::kernels::cpu

// Direct 3x3, stride 1, padding 1 convolution for small feature maps (a VAE decoder's
// 8x8 .. 64x64 maps). On such maps the im2col + sgemm path spends most of its time in
// the column copy and in OpenBLAS's packing of a GEMM too small to amortise it; here
// each task keeps a zero-padded copy of the image (a few hundred KiB, in L2) and
// computes 4 output channels x 3 vectors of 8 output pixels in 12 AVX2 accumulators,
// broadcasting each weight once per tile and loading each input vector once per tap.
#include "kernels/cpu/conv3x3_direct.hpp"

#include <algorithm>
#include <cstring>
#include <vector>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define SC_CONV_AVX2 1
#else
#define SC_CONV_AVX2 0
#endif

#include "kernels/cpu/common.hpp"

namespace stagecraft::kernels::cpu {
namespace {

constexpr int64_t kVec = 8;       // output pixels per AVX2 vector
constexpr int kOutBlock = 4;      // output channels per tile
constexpr int kVecsPerTile = 3;   // pixel vectors per tile

struct Geometry {
  int64_t I, H, W, O;
  int64_t Wp, plane;  // padded row length (a multiple of 8 plus the halo) and plane size
};

// One pixel vector: where its first output pixel reads in a padded plane (tap 0, 0), where
// it writes in the output plane, and how many of its 8 lanes are real pixels.
struct PixelVec {
  int64_t in, out;
  int lanes;
};

#if SC_CONV_AVX2
__m256i lane_mask(int lanes) {
  alignas(32) static const int32_t ramp[8] = {0, 1, 2, 3, 4, 5, 6, 7};
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(lanes), _mm256_load_si256(reinterpret_cast<const __m256i*>(ramp)));
}

// acc[j][v] = Σ_c Σ_taps w[o0 + j][c][tap] · x[c][vec v shifted by tap], j < OB, v < NV.
template <int OB, int NV>
void tile(const Geometry& g, const float* xpad, const float* w, int64_t o0, const PixelVec* pv, const float* bias,
          float* y) {
  __m256 acc[OB][NV];
  for (int j = 0; j < OB; ++j)
    for (int v = 0; v < NV; ++v) acc[j][v] = _mm256_setzero_ps();
  const int64_t wstride = g.I * 9;
  for (int64_t c = 0; c < g.I; ++c) {
    const float* xc = xpad + c * g.plane;
    const float* wc = w + o0 * wstride + c * 9;
    for (int ky = 0; ky < 3; ++ky)
      for (int kx = 0; kx < 3; ++kx) {
        const int64_t off = ky * g.Wp + kx;
        __m256 xv[NV];
        for (int v = 0; v < NV; ++v) xv[v] = _mm256_loadu_ps(xc + pv[v].in + off);
        for (int j = 0; j < OB; ++j) {
          const __m256 wb = _mm256_broadcast_ss(wc + j * wstride + ky * 3 + kx);
          for (int v = 0; v < NV; ++v) acc[j][v] = _mm256_fmadd_ps(wb, xv[v], acc[j][v]);
        }
      }
  }
  const int64_t P = g.H * g.W;
  for (int j = 0; j < OB; ++j) {
    const __m256 b = _mm256_set1_ps(bias ? bias[o0 + j] : 0.0f);
    float* yo = y + (o0 + j) * P;
    for (int v = 0; v < NV; ++v) {
      const __m256 r = _mm256_add_ps(acc[j][v], b);
      if (pv[v].lanes == kVec)
        _mm256_storeu_ps(yo + pv[v].out, r);
      else
        _mm256_maskstore_ps(yo + pv[v].out, lane_mask(pv[v].lanes), r);
    }
  }
}

template <int OB>
void tiles_for_block(const Geometry& g, const float* xpad, const float* w, int64_t o0, const std::vector<PixelVec>& pv,
                     const float* bias, float* y) {
  const int64_t n = static_cast<int64_t>(pv.size());
  int64_t v = 0;
  for (; v + kVecsPerTile <= n; v += kVecsPerTile) tile<OB, kVecsPerTile>(g, xpad, w, o0, &pv[v], bias, y);
  switch (n - v) {
    case 2: tile<OB, 2>(g, xpad, w, o0, &pv[v], bias, y); break;
    case 1: tile<OB, 1>(g, xpad, w, o0, &pv[v], bias, y); break;
    default: break;
  }
}
#endif

}  // namespace

bool conv3x3_direct_available() { return SC_CONV_AVX2 != 0; }

void conv3x3_direct(const float* x, const float* w, const float* bias, float* y, int64_t N, int64_t I, int64_t H,
                    int64_t W, int64_t O) {
#if SC_CONV_AVX2
  Geometry g{I, H, W, O, (W + kVec - 1) / kVec * kVec + 2, 0};
  g.plane = (H + 2) * g.Wp;
  std::vector<PixelVec> pv;
  for (int64_t oy = 0; oy < H; ++oy)
    for (int64_t ox = 0; ox < W; ox += kVec)
      pv.push_back({oy * g.Wp + ox, oy * W + ox, static_cast<int>(std::min(kVec, W - ox))});
  const int64_t blocks = (O + kOutBlock - 1) / kOutBlock;
  // Tasks are (image, group of output blocks); each pads its image once. Groups are
  // sized so that both cores get work even for a single image with few channels.
  const int64_t per_group = std::max<int64_t>(1, std::min<int64_t>(8, blocks / 2));
  const int64_t groups = (blocks + per_group - 1) / per_group;
  parallel_for(N * groups, 1, [&](int64_t t0, int64_t t1) {
    std::vector<float> xpad;
    int64_t padded = -1;
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t n = t / groups, grp = t % groups;
      if (padded != n) {
        // Zero halo of one pixel (plus the row tail up to the vector width).
        xpad.assign(static_cast<size_t>(I * g.plane), 0.0f);
        const float* xn = x + n * I * H * W;
        for (int64_t c = 0; c < I; ++c)
          for (int64_t iy = 0; iy < H; ++iy)
            std::memcpy(&xpad[static_cast<size_t>(c * g.plane + (iy + 1) * g.Wp + 1)], xn + (c * H + iy) * W,
                        static_cast<size_t>(W) * sizeof(float));
        padded = n;
      }
      float* yn = y + n * O * H * W;
      const int64_t b1 = std::min(blocks, (grp + 1) * per_group);
      for (int64_t b = grp * per_group; b < b1; ++b) {
        const int64_t o0 = b * kOutBlock;
        switch (std::min<int64_t>(kOutBlock, O - o0)) {
          case 4: tiles_for_block<4>(g, xpad.data(), w, o0, pv, bias, yn); break;
          case 3: tiles_for_block<3>(g, xpad.data(), w, o0, pv, bias, yn); break;
          case 2: tiles_for_block<2>(g, xpad.data(), w, o0, pv, bias, yn); break;
          default: tiles_for_block<1>(g, xpad.data(), w, o0, pv, bias, yn); break;
        }
      }
    }
  });
#else
  (void)x, (void)w, (void)bias, (void)y, (void)N, (void)I, (void)H, (void)W, (void)O;
#endif
}

}  // namespace stagecraft::kernels::cpu

// conv2d: a 3x3 stride-1 "same" convolution of a small map runs the direct AVX2 kernel
// (conv3x3_direct.cpp); a larger one with >= 32 input channels on a map of at least 16x16
// runs Winograd F(4x4, 3x3) (winograd.cpp); a 1x1 stride-1 unpadded convolution
// is W[O, I] · X[I, H·W] directly; anything else goes through im2col, one band of output
// rows at a time so the column buffer stays bounded (a full 3x3 im2col of a 512-channel
// 128x128 map would be 300 MB). The sgemm calls are split into tiles of the output over our
// pool (blas.hpp), image by image. docs/kernels.md says which layer takes which path and why.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

#include "core/error.hpp"
#include "kernels/cpu/blas.hpp"
#include "kernels/cpu/common.hpp"
#include "kernels/cpu/conv3x3_direct.hpp"
#include "kernels/cpu/cpu_ops.hpp"
#include "kernels/cpu/winograd.hpp"

namespace stagecraft::kernels::cpu {
namespace {

// The direct kernel wins on small products (bench_kernels, idle 2-core machine: 1.36-1.56x
// at 19 MFLOP - 8x8x64, 16x16x64, 32x32x32 - but 0.82x at 32x32x64, 75 MFLOP, where
// sgemm's blocking pays for its packing), and only while one padded image stays in L2.
constexpr int64_t kDirectMaxImageBytes = 1 << 20;
constexpr double kDirectMaxFlops = 32e6;

bool use_direct_3x3(int64_t I, int64_t H, int64_t W, int64_t O, int64_t kh, int64_t kw, int stride, int padding) {
  if (kh != 3 || kw != 3 || stride != 1 || padding != 1 || !conv3x3_direct_available()) return false;
  const int64_t padded = I * (H + 2) * ((W + 7) / 8 * 8 + 2) * 4;
  const double flops = 2.0 * static_cast<double>(O) * static_cast<double>(I) * 9.0 * static_cast<double>(H * W);
  return padded <= kDirectMaxImageBytes && flops <= kDirectMaxFlops;
}

// Winograd F(4x4, 3x3) for the 3x3 stride-1 "same" convs that used to go to im2col, with
// at least 32 input channels and a map of at least 16x16 (docs/kernels.md has the
// measurements): there it beats im2col + sgemm by 2-3x at the SD VAE's widths, and even for
// 3 output channels on a large map (conv_out, 128 -> 3 at 256x256: 3.2x, because im2col's
// column copy dominates a 3-row GEMM). Fewer input channels leave the GEMMs too thin to pay
// for the transforms (conv_in, 4 -> 512: 0.5-0.7x). The direct kernel keeps its small
// products: against it Winograd measured 0.73-0.97x on an idle machine (1.5-2.3x only
// under load). Returns the tile size m, or 0 for "not Winograd".
// STAGECRAFT_WINOGRAD=0 turns the path off, for A/B runs of whole models.
int winograd_tile(int64_t I, int64_t H, int64_t W, bool direct_applies) {
  static const bool enabled = [] {
    const char* e = std::getenv("STAGECRAFT_WINOGRAD");
    return !(e && std::string(e) == "0");
  }();
  if (!enabled || direct_applies || I < 32 || H < 16 || W < 16) return 0;
  return 4;
}

}  // namespace

namespace {

enum class Path { automatic, gemm_only, winograd };

// The Winograd path of a 3x3 / stride-1 / padding-1 conv; with `up` the conv runs over the
// nearest 2x upsampling of x, folded into the input gather (conv2d_upsample2x). The
// weights' transform comes from the cache (winograd.hpp): computed on a conv's first call,
// reused on every later call with the same weight tensor; a call with enough tiles to
// amortize it transforms for itself instead of adding to the cache. The tile count is that
// of the conv's output map, so a folded call caches exactly when the unfolded one would.
Tensor conv2d_winograd_impl(const Tensor& x, const Tensor& w, const Tensor* bias, int m, int64_t scratch, bool up) {
  const int64_t N = x.size(0), H = (up ? 2 : 1) * x.size(2), W = (up ? 2 : 1) * x.size(3), O = w.size(0);
  F32In xf(x);
  std::unique_ptr<F32In> bf;
  if (bias) bf = std::make_unique<F32In>(*bias);
  F32Out out({N, O, H, W}, x.dtype());
  if (N * O * H * W == 0) return out.finish();
  const int64_t tiles = N * ((H + m - 1) / m) * ((W + m - 1) / m);
  const auto u = winograd_weights_cached(w, m, winograd_worth_caching(tiles));
  conv3x3_winograd(xf.data(), *u, bf ? bf->data() : nullptr, out.data(), N, H, W, scratch, up);
  return out.finish();
}

Tensor conv2d_impl(const Tensor& x, const Tensor& w, const Tensor* bias, int stride, int padding, Path path,
                   int wino_m = 4, int64_t wino_scratch = 0) {
  const int64_t N = x.size(0), I = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t O = w.size(0), kh = w.size(2), kw = w.size(3);
  const int64_t Ho = (H + 2 * padding - kh) / stride + 1, Wo = (W + 2 * padding - kw) / stride + 1;
  const bool is3x3same = kh == 3 && kw == 3 && stride == 1 && padding == 1;
  if (path == Path::winograd && !is3x3same) path = Path::gemm_only;
  if (path == Path::automatic && is3x3same) {
    if (const int m = winograd_tile(I, H, W, use_direct_3x3(I, H, W, O, kh, kw, stride, padding))) {
      path = Path::winograd;
      wino_m = m;
    }
  }
  const int64_t P = Ho * Wo, Kdim = I * kh * kw;
  if (path == Path::winograd) return conv2d_winograd_impl(x, w, bias, wino_m, wino_scratch, /*up=*/false);
  F32In xf(x), wf(w);
  std::unique_ptr<F32In> bf;
  if (bias) bf = std::make_unique<F32In>(*bias);
  F32Out out({N, O, Ho, Wo}, x.dtype());
  float* py = out.data();
  if (N * O * P == 0) return out.finish();
  if (path == Path::automatic && use_direct_3x3(I, H, W, O, kh, kw, stride, padding)) {
    conv3x3_direct(xf.data(), wf.data(), bf ? bf->data() : nullptr, py, N, I, H, W, O);
    return out.finish();
  }

  const bool direct = kh == 1 && kw == 1 && stride == 1 && padding == 0;
  // Band height so that the column buffer holds at most ~4M floats (16 MiB).
  const int64_t band = direct ? Ho : std::clamp<int64_t>(4194304 / std::max<int64_t>(1, Kdim * Wo), 1, Ho);
  std::unique_ptr<float[]> col(direct ? nullptr : new float[Kdim * band * Wo]);

  for (int64_t n = 0; n < N; ++n) {
    const float* xn = xf.data() + n * I * H * W;
    float* yn = py + n * O * P;
    if (direct) {
      sgemm_tiles(false, O, P, I, wf.data(), I, xn, P, yn, P);
    } else {
      for (int64_t oy0 = 0; oy0 < Ho; oy0 += band) {
        const int64_t rows = std::min(band, Ho - oy0), cols = rows * Wo;
        parallel_for(Kdim, 8, [&](int64_t r0, int64_t r1) {
          for (int64_t r = r0; r < r1; ++r) {
            const int64_t c = r / (kh * kw), ky = (r / kw) % kh, kx = r % kw;
            const float* xc = xn + c * H * W;
            float* dst = col.get() + r * cols;
            for (int64_t oy = 0; oy < rows; ++oy) {
              const int64_t iy = (oy0 + oy) * stride - padding + ky;
              float* d = dst + oy * Wo;
              if (iy < 0 || iy >= H) {
                std::memset(d, 0, static_cast<size_t>(Wo) * 4);
                continue;
              }
              const float* srow = xc + iy * W;
              for (int64_t ox = 0; ox < Wo; ++ox) {
                const int64_t ix = ox * stride - padding + kx;
                d[ox] = (ix >= 0 && ix < W) ? srow[ix] : 0.0f;
              }
            }
          }
        });
        sgemm_tiles(false, O, cols, Kdim, wf.data(), Kdim, col.get(), cols, yn + oy0 * Wo, P);
      }
    }
    if (bf) {
      const float* b = bf->data();
      parallel_for(O, std::max<int64_t>(1, 65536 / P), [&](int64_t o0, int64_t o1) {
        for (int64_t o = o0; o < o1; ++o)
          for (int64_t i = 0; i < P; ++i) yn[o * P + i] += b[o];
      });
    }
  }
  return out.finish();
}

}  // namespace

Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor* bias, int stride, int padding) {
  return conv2d_impl(x, w, bias, stride, padding, Path::automatic);
}

Tensor conv2d_gemm(const Tensor& x, const Tensor& w, const Tensor* bias, int stride, int padding) {
  return conv2d_impl(x, w, bias, stride, padding, Path::gemm_only);
}

Tensor conv2d_winograd(const Tensor& x, const Tensor& w, const Tensor* bias, int m, int64_t scratch_floats) {
  return conv2d_impl(x, w, bias, 1, 1, Path::winograd, m, scratch_floats);
}

// Folded exactly where conv2d would run the upsampled map through Winograd (the same
// winograd_tile / use_direct_3x3 decision on the upsampled shape), so the bytes are those of
// upsample + conv2d on every path: the fold changes where the gather reads, not what it
// reads. Everything else (1x1, strided, few channels, small maps, the direct kernel's
// shapes, STAGECRAFT_WINOGRAD=0) runs the two ops.
Tensor conv2d_upsample2x(const Tensor& x, const Tensor& w, const Tensor* bias, int stride, int padding) {
  const int64_t I = x.size(1), H = 2 * x.size(2), W = 2 * x.size(3);
  const int64_t O = w.size(0), kh = w.size(2), kw = w.size(3);
  if (kh == 3 && kw == 3 && stride == 1 && padding == 1)
    if (const int m = winograd_tile(I, H, W, use_direct_3x3(I, H, W, O, kh, kw, stride, padding)))
      return conv2d_winograd_impl(x, w, bias, m, 0, /*up=*/true);
  return conv2d(upsample_nearest2x(x), w, bias, stride, padding);
}

Tensor conv2d_winograd_upsample2x(const Tensor& x, const Tensor& w, const Tensor* bias, int m, int64_t scratch_floats) {
  SC_CHECK(w.size(2) == 3 && w.size(3) == 3, Errc::invalid_argument,
           "conv2d_winograd_upsample2x: Winograd needs a 3x3 kernel, found " << w.shape_str());
  return conv2d_winograd_impl(x, w, bias, m, scratch_floats, /*up=*/true);
}

}  // namespace stagecraft::kernels::cpu

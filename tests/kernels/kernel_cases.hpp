#pragma once
// The kernel test cases, written once and run on every backend. On the CPU each op
// is compared with its naive reference (kernels/reference/); on CUDA with the CPU
// backend on the same inputs, as ggml's test-backend-ops does. Inputs are made on
// the host and moved to the device under test; views (permute, transpose) are taken
// inside the op lambdas so strided inputs are exercised on every device.
#include <doctest/doctest.h>

#include <algorithm>
#include <functional>
#include <random>
#include <string>
#include <vector>

#if STAGECRAFT_HAVE_CUDA
#include <cuda_runtime.h>
#endif

#include "core/device.hpp"
#include "core/error.hpp"
#include "kernels/ops.hpp"
#include "kernels/reference/reference.hpp"

namespace kcases {

using namespace stagecraft;
namespace ref = stagecraft::kernels::reference;
using Inputs = std::vector<Tensor>;
using OpFn = std::function<Tensor(const Inputs&)>;

inline std::mt19937& rng() {
  static std::mt19937 g(1234);
  return g;
}

/// Uniform in [-amp, amp], rounded to `dtype`.
inline Tensor rand_tensor(const Shape& shape, DType dtype = DType::f32, float amp = 1.0f) {
  std::uniform_real_distribution<float> u(-amp, amp);
  std::vector<float> v(static_cast<size_t>(shape_numel(shape)));
  for (float& e : v) e = u(rng());
  return Tensor::from_vector(v, shape).to(dtype);
}

inline const char* name(DType t) { return dtype_name(t); }

/// Per-dtype tolerance, relative to the largest expected magnitude (at least 1).
inline double tolerance(DType t) {
  switch (t) {
    case DType::f16: return 4e-3;
    case DType::bf16: return 3e-2;
    default: return 1e-4;
  }
}

inline constexpr DType kFloatTypes[] = {DType::f32, DType::f16, DType::bf16};

inline void sync(Device d) {
#if STAGECRAFT_HAVE_CUDA
  if (d.is_cuda()) REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
#endif
}

/// Runs `op` on `dev` and compares it with `ref` on the CPU (or with `op` itself on the
/// CPU when `dev` is a GPU). `tol_scale` widens the dtype tolerance for ops whose
/// error grows with the arguments (e.g. sin of large timesteps).
inline void check_op(Device dev, const std::string& what, const Inputs& cpu_inputs, const OpFn& op, const OpFn& ref_fn,
                     double tol_scale = 1.0) {
  CAPTURE(what);
  Tensor expected, got;
  if (dev.is_cpu()) {
    got = op(cpu_inputs);
    expected = ref_fn(cpu_inputs);
  } else {
    Inputs dev_inputs;
    for (const Tensor& t : cpu_inputs) dev_inputs.push_back(t.defined() ? ops::to_device(t, dev) : t);
    Tensor g = op(dev_inputs);
    REQUIRE(g.device() == dev);
    got = ops::to_device(g, Device::cpu());
    sync(dev);
    expected = op(cpu_inputs);
  }
  REQUIRE(got.shape() == expected.shape());
  CHECK(got.dtype() == expected.dtype());
  const double err = ref::max_abs_diff(got, expected);
  const double tol = tolerance(got.dtype()) * tol_scale * std::max(1.0, ref::max_abs(expected));
  CAPTURE(err);
  CAPTURE(tol);
  CHECK(err <= tol);
}

// ---------------------------------------------------------------- cases

inline void linear(Device dev) {
  struct S { Shape x; int64_t n; };
  for (DType dt : kFloatTypes)
    for (const S& s : {S{{1, 1}, 1}, S{{3, 17}, 5}, S{{17, 33}, 3}, S{{2, 5, 64}, 33}, S{{4, 3, 128}, 1}})
      for (bool with_bias : {false, true}) {
        const int64_t K = s.x.back();
        Inputs in{rand_tensor(s.x, dt), rand_tensor({s.n, K}, dt), rand_tensor({s.n}, dt)};
        check_op(dev, std::string("linear ") + shape_str(s.x) + " N=" + std::to_string(s.n) + " " + name(dt) +
                          (with_bias ? " bias" : ""),
                 in, [&](const Inputs& t) { return ops::linear(t[0], t[1], with_bias ? &t[2] : nullptr); },
                 [&](const Inputs& t) { return ref::linear(t[0], t[1], with_bias ? &t[2] : nullptr); });
      }
  // A transposed (non-contiguous) activation.
  Inputs in{rand_tensor({33, 7}), rand_tensor({5, 33}), rand_tensor({5})};
  check_op(dev, "linear on a transposed input", in,
           [](const Inputs& t) { return ops::linear(t[0].transpose(0, 1), t[1], &t[2]); },
           [](const Inputs& t) { return ref::linear(t[0].transpose(0, 1), t[1], &t[2]); });
}

/// linear_per_item: the same numbers as linear, and every item's rows bit-for-bit the
/// same whether it runs alone or inside a batch of 2..8 items (the denoiser's promise that
/// a job batched with others gives the bytes it gives alone).
inline void linear_per_item(Device dev) {
  // Few and many rows per item (all through the CPU's row-invariant kernel; K with and
  // without a tail of 8), a 2-D input (one row per item).
  struct R { Shape x; int64_t n; };
  for (DType dt : kFloatTypes)
    for (const R& s : {R{{3, 17, 48}, 24}, R{{2, 5, 37}, 7}, R{{2, 300, 64}, 20}, R{{5, 33}, 9}})
      for (bool with_bias : {false, true}) {
        const int64_t K = s.x.back();
        Inputs in{rand_tensor(s.x, dt), rand_tensor({s.n, K}, dt), rand_tensor({s.n}, dt)};
        check_op(dev, "linear_per_item " + shape_str(s.x) + " N=" + std::to_string(s.n) + " " + name(dt) +
                          (with_bias ? " bias" : ""),
                 in, [&](const Inputs& t) { return ops::linear_per_item(t[0], t[1], with_bias ? &t[2] : nullptr); },
                 [&](const Inputs& t) { return ref::linear(t[0], t[1], with_bias ? &t[2] : nullptr); });
      }
  // Shapes of the shipped denoiser's projections (16 tokens, width 192, feed-forward 768),
  // of PixArt-alpha's timestep MLP (one row per item), and long items (once one sgemm each).
  struct S { int64_t rows, k, n; };
  for (DType dt : {DType::f32, DType::f16})
    for (const S& s : {S{16, 192, 768}, S{16, 768, 192}, S{1, 256, 1152}, S{260, 72, 40}}) {
      CAPTURE(s.rows);
      CAPTURE(s.k);
      CAPTURE(s.n);
      CAPTURE(name(dt));
      const Tensor pool = ops::to_device(rand_tensor({8, s.rows, s.k}, dt), dev);
      const Tensor w = ops::to_device(rand_tensor({s.n, s.k}, dt), dev), b = ops::to_device(rand_tensor({s.n}, dt), dev);
      std::vector<Tensor> alone;
      for (int64_t i = 0; i < 8; ++i)
        alone.push_back(ops::to_device(ops::linear_per_item(pool.slice(0, i, i + 1), w, &b), Device::cpu()));
      double plain_worst = 0.0;
      for (int64_t items : {2, 3, 4, 8}) {
        const Tensor batched = ops::to_device(ops::linear_per_item(pool.slice(0, 0, items), w, &b), Device::cpu());
        const Tensor plain = ops::to_device(ops::linear(pool.slice(0, 0, items), w, &b), Device::cpu());
        sync(dev);
        for (int64_t i = 0; i < items; ++i) {
          CAPTURE(items);
          CAPTURE(i);
          CHECK(ref::max_abs_diff(batched.slice(0, i, i + 1), alone[static_cast<size_t>(i)]) == 0.0);
          plain_worst = std::max(plain_worst, ref::max_abs_diff(plain.slice(0, i, i + 1), alone[static_cast<size_t>(i)]));
        }
      }
      // Not asserted (it depends on the BLAS build): how far one batched GEMM strays.
      MESSAGE("ops::linear over the batch differs from an item alone by up to " << plain_worst);
    }
}

/// The fused linear ops (bias + GELU, gated residual) against their naive references over
/// odd shapes, every gate layout (including a strided slice of a [B, 6, N] table), and an
/// item's bits alone against inside a batch.
inline void fused_linear(Device dev) {
  struct S { Shape x; int64_t n; };
  for (DType dt : kFloatTypes)
    for (const S& s : {S{{2, 5, 37}, 7}, S{{3, 17, 48}, 33}, S{{2, 49, 300}, 20}, S{{1, 1, 9}, 1}})
      for (bool with_bias : {false, true}) {
        const int64_t B = s.x[0], K = s.x.back();
        Shape out = s.x;
        out.back() = s.n;
        const std::string what = shape_str(s.x) + " N=" + std::to_string(s.n) + " " + name(dt) + (with_bias ? " bias" : "");
        for (bool tanh : {true, false}) {
          Inputs in{rand_tensor(s.x, dt, 2.0f), rand_tensor({s.n, K}, dt), rand_tensor({s.n}, dt)};
          check_op(dev, std::string("linear_gelu_per_item ") + (tanh ? "tanh " : "erf ") + what, in,
                   [&](const Inputs& t) { return ops::linear_gelu_per_item(t[0], t[1], with_bias ? &t[2] : nullptr, tanh); },
                   [&](const Inputs& t) { return ref::linear_gelu(t[0], t[1], with_bias ? &t[2] : nullptr, tanh); });
        }
        // gate: none, [B, N], [B, 1, N], [N], and [B, 1, N] sliced out of a [B, 6, N] table.
        for (int g = 0; g < 5; ++g) {
          const Shape gs = g == 1 ? Shape{B, s.n} : g == 2 ? Shape{B, 1, s.n} : g == 3 ? Shape{s.n} : Shape{B, 6, s.n};
          Inputs in{rand_tensor(s.x, dt), rand_tensor({s.n, K}, dt), rand_tensor({s.n}, dt), rand_tensor(out, dt),
                    rand_tensor(gs, dt)};
          auto gate = [g](const Inputs& t) { return g == 4 ? t[4].slice(1, 5, 6) : t[4]; };
          check_op(dev, "linear_residual_per_item gate " + std::to_string(g) + " " + what, in,
                   [&](const Inputs& t) {
                     const Tensor gt = gate(t);
                     return ops::linear_residual_per_item(t[0], t[1], with_bias ? &t[2] : nullptr, t[3], g ? &gt : nullptr);
                   },
                   [&](const Inputs& t) {
                     const Tensor gt = gate(t);
                     return ref::linear_residual(t[0], t[1], with_bias ? &t[2] : nullptr, t[3], g ? &gt : nullptr);
                   });
        }
      }
  // An item's bits alone and inside batches of 2, 3 and 5 (its gate row moves with it).
  for (int64_t rows : {16, 260}) {
    CAPTURE(rows);
    const int64_t K = 72, N = 40;
    const Tensor x = ops::to_device(rand_tensor({5, rows, K}), dev), r = ops::to_device(rand_tensor({5, rows, N}), dev);
    const Tensor table = ops::to_device(rand_tensor({5, 6, N}), dev);
    const Tensor w = ops::to_device(rand_tensor({N, K}), dev), b = ops::to_device(rand_tensor({N}), dev);
    auto res = [&](int64_t i0, int64_t i1) {
      const Tensor gate = table.slice(0, i0, i1).slice(1, 2, 3);
      return ops::to_device(ops::linear_residual_per_item(x.slice(0, i0, i1), w, &b, r.slice(0, i0, i1), &gate),
                            Device::cpu());
    };
    auto gel = [&](int64_t i0, int64_t i1) {
      return ops::to_device(ops::linear_gelu_per_item(x.slice(0, i0, i1), w, &b, true), Device::cpu());
    };
    for (int64_t items : {2, 3, 5}) {
      const Tensor rb = res(0, items), gb = gel(0, items);
      sync(dev);
      for (int64_t i = 0; i < items; ++i) {
        CAPTURE(items);
        CAPTURE(i);
        CHECK(ref::max_abs_diff(rb.slice(0, i, i + 1), res(i, i + 1)) == 0.0);
        CHECK(ref::max_abs_diff(gb.slice(0, i, i + 1), gel(i, i + 1)) == 0.0);
      }
    }
  }
}

/// layer_norm_modulate (adaLN in one pass) against its naive reference: with and without
/// the affine weights, every shift/scale layout including slices of a [B, 6, C] table.
inline void layer_norm_modulate(Device dev) {
  for (DType dt : kFloatTypes)
    for (const Shape& xs : {Shape{2, 17, 33}, Shape{1, 3, 96}, Shape{3, 1, 1152}})
      for (int layout = 0; layout < 4; ++layout)
        for (bool affine : {false, true}) {
          const int64_t B = xs[0], C = xs[2];
          const Shape ms = layout == 0 ? Shape{B, C} : layout == 1 ? Shape{B, 1, C} : layout == 2 ? Shape{C} : Shape{B, 6, C};
          Inputs in{rand_tensor(xs, dt, 3.0f), rand_tensor({C}, dt), rand_tensor({C}, dt), rand_tensor(ms, dt),
                    rand_tensor(ms, dt)};
          auto part = [layout](const Tensor& t, int i) { return layout == 3 ? t.slice(1, i, i + 1) : t; };
          check_op(dev, "layer_norm_modulate " + shape_str(xs) + " " + shape_str(ms) + " " + name(dt) + (affine ? " affine" : ""),
                   in,
                   [&](const Inputs& t) {
                     return ops::layer_norm_modulate(t[0], affine ? &t[1] : nullptr, affine ? &t[2] : nullptr, 1e-6f,
                                                     part(t[3], 0), part(t[4], 1));
                   },
                   [&](const Inputs& t) {
                     return ref::layer_norm_modulate(t[0], affine ? &t[1] : nullptr, affine ? &t[2] : nullptr, 1e-6f,
                                                     part(t[3], 0), part(t[4], 1));
                   });
        }
}

inline void matmul(Device dev) {
  for (DType dt : kFloatTypes)
    for (bool tb : {false, true}) {
      struct S { int64_t b, m, k, n; };
      for (const S& s : {S{1, 1, 1, 1}, S{3, 5, 17, 33}, S{2, 17, 3, 9}}) {
        Inputs in{rand_tensor({s.b, s.m, s.k}, dt), rand_tensor(tb ? Shape{s.b, s.n, s.k} : Shape{s.b, s.k, s.n}, dt)};
        check_op(dev, std::string("matmul b=") + std::to_string(s.b) + (tb ? " trans_b " : " ") + name(dt), in,
                 [&](const Inputs& t) { return ops::matmul(t[0], t[1], tb); },
                 [&](const Inputs& t) { return ref::matmul(t[0], t[1], tb); });
      }
      Inputs in2{rand_tensor({7, 9}, dt), rand_tensor(tb ? Shape{4, 9} : Shape{9, 4}, dt)};
      check_op(dev, std::string("matmul 2-D ") + name(dt), in2, [&](const Inputs& t) { return ops::matmul(t[0], t[1], tb); },
               [&](const Inputs& t) { return ref::matmul(t[0], t[1], tb); });
    }
  Inputs in{rand_tensor({3, 5, 8}), rand_tensor({8, 6})};
  check_op(dev, "matmul broadcasts a 2-D b over the batch", in, [](const Inputs& t) { return ops::matmul(t[0], t[1]); },
           [](const Inputs& t) { return ref::matmul(t[0], t[1], false); });
}

inline void attention(Device dev) {
  struct S { int64_t b, h, lq, lk, d; bool causal, mask; float scale; };
  const S shapes[] = {{1, 1, 1, 1, 1, false, false, 0.0f},     {2, 3, 17, 17, 8, false, false, 0.0f},
                      {1, 2, 5, 33, 16, true, false, 0.0f},     {2, 2, 17, 17, 64, true, true, 0.0f},
                      {2, 1, 3, 9, 72, false, true, 0.3f},      {1, 2, 300, 300, 16, true, false, 0.0f},
                      {1, 1, 33, 3, 128, true, false, 0.0f},    {1, 1, 70, 801, 24, true, true, 0.0f},
                      {1, 1, 9, 777, 64, false, true, 0.0f}};
  for (DType dt : kFloatTypes)
    for (const S& s : shapes) {
      // Batch 0 attends to a prefix; the last batch has every key masked (its output must be 0).
      std::vector<float> mask(static_cast<size_t>(s.b * s.lk), 1.0f);
      for (int64_t j = 0; j < s.lk; ++j) {
        mask[j] = j < (s.lk + 1) / 2 ? 1.0f : 0.0f;
        if (s.b > 1) mask[(s.b - 1) * s.lk + j] = 0.0f;
      }
      Inputs in{rand_tensor({s.b, s.h, s.lq, s.d}, dt, 2.0f), rand_tensor({s.b, s.h, s.lk, s.d}, dt, 2.0f),
                rand_tensor({s.b, s.h, s.lk, s.d}, dt), Tensor::from_vector(mask, {s.b, s.lk}).to(DType::u8)};
      ops::AttentionOptions o;
      o.causal = s.causal;
      o.scale = s.scale;
      const std::string what = "attention " + std::to_string(s.b) + "x" + std::to_string(s.h) + " Lq=" +
                               std::to_string(s.lq) + " Lk=" + std::to_string(s.lk) + " D=" + std::to_string(s.d) +
                               (s.causal ? " causal" : "") + (s.mask ? " mask " : " ") + name(dt);
      check_op(dev, what, in,
               [&](const Inputs& t) {
                 ops::AttentionOptions oo = o;
                 if (s.mask) oo.key_padding_mask = &t[3];
                 return ops::attention(t[0], t[1], t[2], oo);
               },
               [&](const Inputs& t) {
                 ops::AttentionOptions oo = o;
                 if (s.mask) oo.key_padding_mask = &t[3];
                 return ref::attention(t[0], t[1], t[2], oo);
               });
    }
  // The tokens-first output layout ([B, Lq, H, D]: a transformer's [B, Lq, H·D] rows), causal and masked.
  {
    std::vector<float> mask(2 * 21, 1.0f);
    for (int j = 10; j < 21; ++j) mask[j] = 0.0f;
    Inputs in{rand_tensor({2, 3, 19, 72}), rand_tensor({2, 3, 21, 72}), rand_tensor({2, 3, 21, 72}),
              Tensor::from_vector(mask, {2, 21}).to(DType::u8)};
    for (bool causal : {false, true})
      check_op(dev, std::string("attention with a tokens-first output") + (causal ? " causal" : ""), in,
               [&](const Inputs& t) {
                 ops::AttentionOptions o;
                 o.causal = causal;
                 o.key_padding_mask = &t[3];
                 o.out_layout = ops::AttentionLayout::tokens_first;
                 return ops::attention(t[0], t[1], t[2], o);
               },
               [&](const Inputs& t) {
                 ops::AttentionOptions o;
                 o.causal = causal;
                 o.key_padding_mask = &t[3];
                 return ops::contiguous(ref::attention(t[0], t[1], t[2], o).permute({0, 2, 1, 3}));
               });
  }
  // q, k, v as views of a [B, L, H, D] projection (strided along tokens) and an i32 mask.
  Inputs in{rand_tensor({2, 19, 3, 16}), rand_tensor({2, 23, 3, 16}), rand_tensor({2, 23, 3, 16}),
            Tensor::from_vector(std::vector<float>(46, 1.0f), {2, 23}).to(DType::i32)};
  in[3].fill(1.0);
  check_op(dev, "attention on permuted [B, L, H, D] views", in,
           [](const Inputs& t) {
             ops::AttentionOptions o;
             o.key_padding_mask = &t[3];
             const std::vector<int> p{0, 2, 1, 3};
             return ops::attention(t[0].permute(p), t[1].permute(p), t[2].permute(p), o);
           },
           [](const Inputs& t) {
             ops::AttentionOptions o;
             o.key_padding_mask = &t[3];
             const std::vector<int> p{0, 2, 1, 3};
             return ref::attention(t[0].permute(p), t[1].permute(p), t[2].permute(p), o);
           });
}

inline void norms(Device dev) {
  for (DType dt : kFloatTypes) {
    const std::string n = name(dt);
    for (const Shape& s : {Shape{1}, Shape{3, 17}, Shape{2, 5, 33}}) {
      Inputs in{rand_tensor(s, dt, 4.0f), rand_tensor({s.back()}, dt), rand_tensor({s.back()}, dt)};
      check_op(dev, "softmax " + shape_str(s) + " " + n, in, [](const Inputs& t) { return ops::softmax(t[0]); },
               [](const Inputs& t) { return ref::softmax(t[0]); });
      check_op(dev, "layer_norm " + shape_str(s) + " " + n, in,
               [](const Inputs& t) { return ops::layer_norm(t[0], &t[1], &t[2], 1e-5f); },
               [](const Inputs& t) { return ref::layer_norm(t[0], &t[1], &t[2], 1e-5f); });
      check_op(dev, "layer_norm without affine " + shape_str(s) + " " + n, in,
               [](const Inputs& t) { return ops::layer_norm(t[0], nullptr, nullptr, 1e-6f); },
               [](const Inputs& t) { return ref::layer_norm(t[0], nullptr, nullptr, 1e-6f); });
      check_op(dev, "rms_norm " + shape_str(s) + " " + n, in,
               [](const Inputs& t) { return ops::rms_norm(t[0], &t[1], 1e-6f); },
               [](const Inputs& t) { return ref::rms_norm(t[0], &t[1], 1e-6f); });
    }
    struct G { Shape s; int groups; };
    for (const G& g : {G{{2, 6, 5, 3}, 3}, G{{1, 4, 7}, 1}, G{{2, 8, 17, 17}, 4}, G{{1, 32, 1, 1}, 32}})
      for (bool silu : {false, true})
        for (bool affine : {false, true}) {
          Inputs in{rand_tensor(g.s, dt, 3.0f), rand_tensor({g.s[1]}, dt), rand_tensor({g.s[1]}, dt)};
          check_op(dev, "group_norm " + shape_str(g.s) + " g=" + std::to_string(g.groups) + (silu ? " silu " : " ") + n,
                   in,
                   [&](const Inputs& t) {
                     return ops::group_norm(t[0], g.groups, affine ? &t[1] : nullptr, affine ? &t[2] : nullptr, 1e-6f,
                                            silu);
                   },
                   [&](const Inputs& t) {
                     return ref::group_norm(t[0], g.groups, affine ? &t[1] : nullptr, affine ? &t[2] : nullptr, 1e-6f,
                                            silu);
                   });
        }
  }
  // A row that is entirely -inf has no distribution: zeros, not NaN.
  Tensor x = Tensor::from_vector({-INFINITY, -INFINITY, -INFINITY, 1.0f, 2.0f, 3.0f}, {2, 3});
  check_op(dev, "softmax of a fully masked row", {x}, [](const Inputs& t) { return ops::softmax(t[0]); },
           [](const Inputs& t) { return ref::softmax(t[0]); });
}

inline void activations(Device dev) {
  for (DType dt : kFloatTypes)
    for (float amp : {1.0f, 8.0f, 120.0f}) {
      Inputs in{rand_tensor({3, 1037}, dt, amp)};
      const std::string n = std::string(name(dt)) + " amp " + std::to_string(amp);
      check_op(dev, "gelu " + n, in, [](const Inputs& t) { return ops::gelu(t[0]); },
               [](const Inputs& t) { return ref::gelu(t[0], false); });
      check_op(dev, "gelu tanh " + n, in, [](const Inputs& t) { return ops::gelu(t[0], true); },
               [](const Inputs& t) { return ref::gelu(t[0], true); });
      check_op(dev, "quick_gelu " + n, in, [](const Inputs& t) { return ops::quick_gelu(t[0]); },
               [](const Inputs& t) { return ref::quick_gelu(t[0]); });
      check_op(dev, "silu " + n, in, [](const Inputs& t) { return ops::silu(t[0]); },
               [](const Inputs& t) { return ref::silu(t[0]); });
    }
}

inline void elementwise(Device dev) {
  struct S { Shape a, b; };
  for (DType dt : kFloatTypes)
    for (const S& s : {S{{3, 17}, {3, 17}}, S{{2, 1, 5}, {3, 1}}, S{{4, 33}, {1}}, S{{1}, {2, 3}}, S{{2, 3, 4}, {4}}}) {
      Inputs in{rand_tensor(s.a, dt), rand_tensor(s.b, dt)};
      const std::string n = shape_str(s.a) + " " + shape_str(s.b) + " " + name(dt);
      check_op(dev, "add " + n, in, [](const Inputs& t) { return ops::add(t[0], t[1]); },
               [](const Inputs& t) { return ref::add(t[0], t[1]); });
      check_op(dev, "mul " + n, in, [](const Inputs& t) { return ops::mul(t[0], t[1]); },
               [](const Inputs& t) { return ref::mul(t[0], t[1]); });
      check_op(dev, "axpby " + n, in, [](const Inputs& t) { return ops::axpby(t[0], 0.75f, t[1], -1.5f); },
               [](const Inputs& t) { return ref::axpby(t[0], 0.75f, t[1], -1.5f); });
      check_op(dev, "scale " + n, in, [](const Inputs& t) { return ops::scale(t[0], -3.25f); },
               [](const Inputs& t) { return ref::scale(t[0], -3.25f); });
    }
  Inputs in{rand_tensor({5, 7}), rand_tensor({7, 5})};
  check_op(dev, "add of a transposed view", in, [](const Inputs& t) { return ops::add(t[0], t[1].transpose(0, 1)); },
           [](const Inputs& t) { return ref::add(t[0], t[1].transpose(0, 1)); });
  for (DType dt : kFloatTypes)
    for (const Shape& ms : {Shape{2, 33}, Shape{2, 1, 33}, Shape{33}}) {
      Inputs m{rand_tensor({2, 17, 33}, dt), rand_tensor(ms, dt), rand_tensor(ms, dt)};
      check_op(dev, "modulate shift/scale " + shape_str(ms) + " " + name(dt), m,
               [](const Inputs& t) { return ops::modulate(t[0], t[1], t[2]); },
               [](const Inputs& t) { return ref::modulate(t[0], t[1], t[2]); });
    }
}

inline void conv(Device dev) {
  struct S { int64_t n, i, h, w, o, k; int stride, pad; };
  const S shapes[] = {{1, 3, 7, 5, 4, 3, 1, 1},   {2, 5, 9, 9, 3, 3, 2, 1}, {1, 8, 6, 6, 16, 1, 1, 0},
                      {1, 3, 8, 8, 2, 1, 2, 0},   {1, 17, 4, 3, 1, 3, 1, 1}, {2, 4, 33, 17, 8, 3, 1, 1},
                      {1, 4, 16, 16, 5, 3, 2, 0},
                      // 3x3 "same" on small maps (the CPU's direct kernel): VAE-decoder widths,
                      // 3 and 7 output channels, rows of exactly 3 vectors, and one map large
                      // enough for the im2col path.
                      {2, 64, 8, 8, 64, 3, 1, 1}, {1, 32, 32, 32, 3, 3, 1, 1}, {1, 6, 10, 24, 7, 3, 1, 1},
                      {1, 64, 64, 64, 4, 3, 1, 1},
                      // Channels and products large enough for the CPU's Winograd path (conv2d.cpp
                      // picks it by shape: > 32 MFLOP per image, >= 32 input channels), with H and W
                      // not multiples of its 4x4 tile and odd channel counts.
                      {2, 33, 41, 39, 35, 3, 1, 1}};
  for (DType dt : kFloatTypes)
    for (const S& s : shapes)
      for (bool with_bias : {false, true}) {
        Inputs in{rand_tensor({s.n, s.i, s.h, s.w}, dt), rand_tensor({s.o, s.i, s.k, s.k}, dt), rand_tensor({s.o}, dt)};
        const std::string what = "conv2d " + shape_str(in[0].shape()) + " k" + std::to_string(s.k) + " s" +
                                 std::to_string(s.stride) + " p" + std::to_string(s.pad) + (with_bias ? " bias " : " ") +
                                 name(dt);
        check_op(dev, what, in,
                 [&](const Inputs& t) { return ops::conv2d(t[0], t[1], with_bias ? &t[2] : nullptr, s.stride, s.pad); },
                 [&](const Inputs& t) { return ref::conv2d(t[0], t[1], with_bias ? &t[2] : nullptr, s.stride, s.pad); });
      }
  for (DType dt : kFloatTypes) {
    Inputs in{rand_tensor({2, 3, 5, 7}, dt)};
    check_op(dev, std::string("upsample_nearest2x ") + name(dt), in,
             [](const Inputs& t) { return ops::upsample_nearest2x(t[0]); },
             [](const Inputs& t) { return ref::upsample_nearest2x(t[0]); });
  }
  Inputs in{rand_tensor({2, 5, 3, 4})};
  check_op(dev, "upsample_nearest2x of a permuted view", in,
           [](const Inputs& t) { return ops::upsample_nearest2x(t[0].permute({0, 1, 3, 2})); },
           [](const Inputs& t) { return ref::upsample_nearest2x(t[0].permute({0, 1, 3, 2})); });
}

/// conv2d_upsample2x against conv2d of the reference upsampling: shapes the CPU folds into
/// its Winograd gather (>= 32 input channels, > 32 MFLOP on an upsampled map of >= 16x16,
/// sides not multiples of its 4x4 tile, odd channel counts, batch 2) and shapes it runs as
/// the two ops (the direct kernel's small products, 1x1, stride 2, padding 0), strided input.
inline void conv_upsample2x(Device dev) {
  struct S { int64_t n, i, h, w, o, k; int stride, pad; };
  const S shapes[] = {{2, 33, 21, 20, 35, 3, 1, 1}, {1, 64, 33, 9, 24, 3, 1, 1}, {2, 5, 7, 3, 3, 3, 1, 1},
                      {1, 40, 5, 6, 16, 3, 1, 1},   {2, 6, 4, 5, 7, 1, 1, 0},   {1, 34, 9, 11, 5, 3, 2, 1},
                      {1, 3, 4, 4, 2, 3, 1, 0}};
  for (DType dt : kFloatTypes)
    for (const S& s : shapes)
      for (bool with_bias : {false, true}) {
        Inputs in{rand_tensor({s.n, s.i, s.h, s.w}, dt), rand_tensor({s.o, s.i, s.k, s.k}, dt), rand_tensor({s.o}, dt)};
        const std::string what = "conv2d_upsample2x " + shape_str(in[0].shape()) + " -> " + std::to_string(s.o) +
                                 " k" + std::to_string(s.k) + " s" + std::to_string(s.stride) + " p" +
                                 std::to_string(s.pad) + (with_bias ? " bias " : " ") + name(dt);
        check_op(
            dev, what, in,
            [&](const Inputs& t) { return ops::conv2d_upsample2x(t[0], t[1], with_bias ? &t[2] : nullptr, s.stride, s.pad); },
            [&](const Inputs& t) {
              return ref::conv2d(ref::upsample_nearest2x(t[0]), t[1], with_bias ? &t[2] : nullptr, s.stride, s.pad);
            });
      }
  Inputs in{rand_tensor({1, 36, 11, 23}), rand_tensor({64, 36, 3, 3}), rand_tensor({64})};
  check_op(dev, "conv2d_upsample2x of a transposed view", in,
           [](const Inputs& t) { return ops::conv2d_upsample2x(t[0].transpose(2, 3), t[1], &t[2], 1, 1); },
           [](const Inputs& t) { return ref::conv2d(ref::upsample_nearest2x(t[0].transpose(2, 3)), t[1], &t[2], 1, 1); });
}

inline void diffusion_helpers(Device dev) {
  Tensor t = Tensor::from_vector({0.0f, 1.5f, 250.0f, 999.0f}, {4});
  for (int dim : {32, 33, 256})
    for (bool flip : {false, true})
      for (float shift : {0.0f, 1.0f}) {
        check_op(dev, "timestep_embedding dim " + std::to_string(dim) + (flip ? " flip" : "") + " shift " +
                          std::to_string(shift),
                 {t}, [&](const Inputs& x) { return ops::timestep_embedding(x[0], dim, flip, shift); },
                 [&](const Inputs& x) { return ref::timestep_embedding(x[0], dim, flip, shift, 10000.0f); }, 5.0);
      }
  for (DType dt : kFloatTypes)
    for (int p : {1, 2})
      for (int64_t c : {3, 4}) {
        Inputs in{rand_tensor({2, c, 6, 4}, dt), rand_tensor({2, (6 / p) * (4 / p), p * p * c}, dt)};
        const std::string n = "p=" + std::to_string(p) + " C=" + std::to_string(c) + " " + name(dt);
        check_op(dev, "patchify " + n, in, [&](const Inputs& x) { return ops::patchify(x[0], p); },
                 [&](const Inputs& x) { return ref::patchify(x[0], p); });
        check_op(dev, "unpatchify " + n, in,
                 [&](const Inputs& x) { return ops::unpatchify(x[1], p, static_cast<int>(c), 6, 4); },
                 [&](const Inputs& x) { return ref::unpatchify(x[1], p, static_cast<int>(c), 6, 4); });
      }
  Inputs in{rand_tensor({2, 3, 4, 8})};
  check_op(dev, "patchify of a transposed NCWH view", in,
           [](const Inputs& x) { return ops::patchify(x[0].transpose(2, 3), 2); },
           [](const Inputs& x) { return ref::patchify(x[0].transpose(2, 3), 2); });
}

inline void data_movement(Device dev) {
  for (DType from : kFloatTypes)
    for (DType to : {DType::f32, DType::f16, DType::bf16, DType::i32}) {
      Inputs in{rand_tensor({3, 17}, from, 50.0f)};
      check_op(dev, std::string("cast ") + name(from) + " -> " + name(to), in,
               [&](const Inputs& x) { return ops::cast(x[0], to); }, [&](const Inputs& x) { return ref::cast(x[0], to); });
    }
  Inputs ints{Tensor::from_vector({-3, 0, 7, 1000, 65504, -65504}, {2, 3}).to(DType::i32)};
  check_op(dev, "cast i32 -> f32", ints, [](const Inputs& x) { return ops::cast(x[0], DType::f32); },
           [](const Inputs& x) { return ref::cast(x[0], DType::f32); });
  for (DType dt : kFloatTypes) {
    Inputs in{rand_tensor({3, 5, 7}, dt)};
    check_op(dev, std::string("contiguous of a permuted view ") + name(dt), in,
             [](const Inputs& x) { return ops::contiguous(x[0].permute({2, 0, 1})); },
             [](const Inputs& x) { return ref::contiguous(x[0].permute({2, 0, 1})); });
    Inputs parts{rand_tensor({2, 3, 4}, dt), rand_tensor({2, 1, 4}, dt), rand_tensor({2, 5, 4}, dt)};
    check_op(dev, std::string("cat along dim 1 ") + name(dt), parts,
             [](const Inputs& x) { return ops::cat(x, 1); }, [](const Inputs& x) { return ref::cat(x, 1); });
    Inputs rows{rand_tensor({1, 3, 4}, dt), rand_tensor({3, 3, 4}, dt)};
    check_op(dev, std::string("cat along dim 0 ") + name(dt), rows, [](const Inputs& x) { return ops::cat(x, 0); },
             [](const Inputs& x) { return ref::cat(x, 0); });
    Inputs last{rand_tensor({2, 3, 4}, dt), rand_tensor({2, 3, 1}, dt)};
    check_op(dev, std::string("cat along dim -1 with a transposed part ") + name(dt), last,
             [](const Inputs& x) { return ops::cat({x[0], x[1].transpose(0, 1).transpose(0, 1)}, -1); },
             [](const Inputs& x) { return ref::cat(x, -1); });
  }
}

}  // namespace kcases

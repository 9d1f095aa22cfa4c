// The attention task (attention_block.hpp) compiled three times from attention_block.inc:
// scalar, AVX2 + FMA and AVX-512F, each in its own namespace with its vector policy V.
// The SIMD ones are compiled for their ISA by `#pragma GCC target` (clang, which ignores
// it: `#pragma clang attribute`, as the fuzz build compiles this file) whatever the build's
// -march (as gemm_rows's AVX-512 kernel) and picked at run time. Each policy does the same
// lane-wise operations, exp included, so the three give the same bits; this file is built
// with -ffp-contract=off (kernels/CMakeLists.txt) so the compiler fuses no multiply and add
// behind our back in one kernel and not in another.
#include "kernels/cpu/attention_block.hpp"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <type_traits>

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#define SC_ATTN_X86 1
#else
#define SC_ATTN_X86 0
#endif

namespace stagecraft::kernels::cpu {
namespace {

// Cephes-style exp, 2^n · p(r) with r in [-ln2/2, ln2/2] (as kernels/cpu/common.cpp's, ~2 ulp);
// inputs below -87 give exactly 0. The constants, shared by every policy:
constexpr float kExpHi = 88.3762626647949f, kExpLo = -87.0f, kLog2e = 1.44269504088896341f;
constexpr float kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;
constexpr float kP0 = 1.9875691500E-4f, kP1 = 1.3981999507E-3f, kP2 = 8.3334519073E-3f, kP3 = 4.1665795894E-2f,
                kP4 = 1.6666665459E-1f, kP5 = 5.0000001201E-1f;

// The transposes at a block's ends, element by element (the scalar and AVX2 kernels; AVX-512
// has its own, 16 x 16 in registers, with the same results).
struct ElementCopies {
  // Qt[d][i] = q_i[d] for i < rows, 0 for rows <= i < lanes.
  static void pack_queries(const float* q, int64_t ldq, int64_t rows, int64_t lanes, int64_t D, float* Qt,
                           int64_t ldt) {
    for (int64_t i = 0; i < lanes; ++i)
      for (int64_t d = 0; d < D; ++d) Qt[d * ldt + i] = i < rows ? q[i * ldq + d] : 0.0f;
  }
  // out_i[d] = Ot[d][i] · inv[i] for i < rows.
  static void unpack_outputs(const float* Ot, int64_t ldt, const float* inv, int64_t rows, int64_t D, float* out,
                             int64_t ldo) {
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t d = 0; d < D; ++d) out[i * ldo + d] = Ot[d * ldt + i] * inv[i];
  }
};

namespace scalar {
struct V : ElementCopies {
  using T = float;
  static constexpr int W = 1, RK = 4, NQ = 4, RD = 4;
  static T zero() { return 0.0f; }
  static T load(const float* p) { return *p; }
  static void store(float* p, T x) { *p = x; }
  static T set1(float f) { return f; }
  static T fma(T a, T b, T c) { return std::fma(a, b, c); }
  static T add(T a, T b) { return a + b; }
  static T sub(T a, T b) { return a - b; }
  static T max(T a, T b) { return a > b ? a : b; }  // _mm*_max_ps's choice on ties and NaN
  static T lanes_from(float base) { return base; }
  static T neg_inf_where_less(T x, T last, float j) { return last < j ? -std::numeric_limits<float>::infinity() : x; }
  static T zero_where_neg_inf(T m) { return m == -std::numeric_limits<float>::infinity() ? 0.0f : m; }
  static T recip_or_zero(T l) { return l != 0.0f ? 1.0f / l : 0.0f; }
  static T exp(T x) {
    const bool under = x < kExpLo;
    x = x < kExpHi ? x : kExpHi;  // min then max as the SIMD ones (same result for NaN)
    x = x > kExpLo ? x : kExpLo;
    const float fx = std::floor(std::fma(x, kLog2e, 0.5f));
    x = std::fma(-fx, kLn2Hi, x);
    x = std::fma(-fx, kLn2Lo, x);
    const float z = x * x;
    float y = kP0;
    y = std::fma(y, x, kP1);
    y = std::fma(y, x, kP2);
    y = std::fma(y, x, kP3);
    y = std::fma(y, x, kP4);
    y = std::fma(y, x, kP5);
    y = std::fma(y, z, x);
    y = y + 1.0f;
    const int32_t bits = (static_cast<int32_t>(fx) + 127) * (1 << 23);
    float pow2;
    std::memcpy(&pow2, &bits, 4);
    y = y * pow2;
    return under ? 0.0f : y;
  }
};
#include "kernels/cpu/attention_block.inc"
}  // namespace scalar

#if SC_ATTN_X86
#ifdef __clang__
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#endif
namespace avx2 {
struct V : ElementCopies {
  using T = __m256;
  static constexpr int W = 8, RK = 3, NQ = 3, RD = 3;  // 9 accumulators + 3 + 1 of 16 registers
  static T zero() { return _mm256_setzero_ps(); }
  static T load(const float* p) { return _mm256_load_ps(p); }
  static void store(float* p, T x) { _mm256_store_ps(p, x); }
  static T set1(float f) { return _mm256_set1_ps(f); }
  static T fma(T a, T b, T c) { return _mm256_fmadd_ps(a, b, c); }
  static T add(T a, T b) { return _mm256_add_ps(a, b); }
  static T sub(T a, T b) { return _mm256_sub_ps(a, b); }
  static T max(T a, T b) { return _mm256_max_ps(a, b); }
  static T lanes_from(float base) { return _mm256_add_ps(set1(base), _mm256_setr_ps(0, 1, 2, 3, 4, 5, 6, 7)); }
  static T neg_inf_where_less(T x, T last, float j) {
    return _mm256_blendv_ps(x, set1(-std::numeric_limits<float>::infinity()), _mm256_cmp_ps(last, set1(j), _CMP_LT_OQ));
  }
  static T zero_where_neg_inf(T m) {
    return _mm256_blendv_ps(m, zero(), _mm256_cmp_ps(m, set1(-std::numeric_limits<float>::infinity()), _CMP_EQ_OQ));
  }
  static T recip_or_zero(T l) {
    return _mm256_and_ps(_mm256_div_ps(set1(1.0f), l), _mm256_cmp_ps(l, zero(), _CMP_NEQ_UQ));
  }
  static T exp(T x) {
    const __m256 under = _mm256_cmp_ps(x, set1(kExpLo), _CMP_LT_OQ);
    x = _mm256_max_ps(_mm256_min_ps(x, set1(kExpHi)), set1(kExpLo));
    const __m256 fx = _mm256_floor_ps(_mm256_fmadd_ps(x, set1(kLog2e), set1(0.5f)));
    x = _mm256_fnmadd_ps(fx, set1(kLn2Hi), x);
    x = _mm256_fnmadd_ps(fx, set1(kLn2Lo), x);
    const __m256 z = _mm256_mul_ps(x, x);
    __m256 y = set1(kP0);
    y = _mm256_fmadd_ps(y, x, set1(kP1));
    y = _mm256_fmadd_ps(y, x, set1(kP2));
    y = _mm256_fmadd_ps(y, x, set1(kP3));
    y = _mm256_fmadd_ps(y, x, set1(kP4));
    y = _mm256_fmadd_ps(y, x, set1(kP5));
    y = _mm256_fmadd_ps(y, z, x);
    y = _mm256_add_ps(y, set1(1.0f));
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvttps_epi32(fx), _mm256_set1_epi32(127)), 23);
    y = _mm256_mul_ps(y, _mm256_castsi256_ps(e));
    return _mm256_andnot_ps(under, y);
  }
};
#include "kernels/cpu/attention_block.inc"
}  // namespace avx2
#ifdef __clang__
#pragma clang attribute pop
#pragma clang attribute push(__attribute__((target("avx512f"))), apply_to = function)
#else
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("avx512f")
// GCC 12's AVX-512 intrinsics start from _mm512_undefined_ps() and warn about it when inlined.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
namespace avx512 {

// r[0..16) := its transpose (r[i] lane j <- r[j] lane i), in 64 shuffles.
inline void transpose16(__m512 (&r)[16]) {
  // t: pairs of rows interleaved; u[g][c]: rows 4g..4g+3 of column 4L + c in 128-bit lane L.
  __m512 t[16], u[4][4], s[2][4][2];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int g = 0; g < 4; ++g)
    for (int h = 0; h < 2; ++h) {
      const __m512d a = _mm512_castps_pd(t[4 * g + h]), b = _mm512_castps_pd(t[4 * g + 2 + h]);
      u[g][2 * h] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, b));
      u[g][2 * h + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, b));
    }
  // s[p][c][0]: columns c and 8 + c of rows 8p..8p+7; s[p][c][1]: columns 4 + c and 12 + c.
  for (int p = 0; p < 2; ++p)
    for (int c = 0; c < 4; ++c) {
      s[p][c][0] = _mm512_shuffle_f32x4(u[2 * p][c], u[2 * p + 1][c], 0x88);
      s[p][c][1] = _mm512_shuffle_f32x4(u[2 * p][c], u[2 * p + 1][c], 0xdd);
    }
  for (int c = 0; c < 4; ++c) {
    r[c] = _mm512_shuffle_f32x4(s[0][c][0], s[1][c][0], 0x88);
    r[8 + c] = _mm512_shuffle_f32x4(s[0][c][0], s[1][c][0], 0xdd);
    r[4 + c] = _mm512_shuffle_f32x4(s[0][c][1], s[1][c][1], 0x88);
    r[12 + c] = _mm512_shuffle_f32x4(s[0][c][1], s[1][c][1], 0xdd);
  }
}

inline __mmask16 first_lanes(int64_t n) { return static_cast<__mmask16>(n >= 16 ? 0xFFFF : (1u << n) - 1); }

struct V {
  using T = __m512;
  static constexpr int W = 16, RK = 6, NQ = 4, RD = 6;  // 24 accumulators + 4 + 1 of 32 registers
  static T zero() { return _mm512_setzero_ps(); }
  static T load(const float* p) { return _mm512_load_ps(p); }
  static void store(float* p, T x) { _mm512_store_ps(p, x); }
  static T set1(float f) { return _mm512_set1_ps(f); }
  static T fma(T a, T b, T c) { return _mm512_fmadd_ps(a, b, c); }
  static T add(T a, T b) { return _mm512_add_ps(a, b); }
  static T sub(T a, T b) { return _mm512_sub_ps(a, b); }
  static T max(T a, T b) { return _mm512_max_ps(a, b); }
  static T lanes_from(float base) {
    return _mm512_add_ps(set1(base), _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
  }
  static T neg_inf_where_less(T x, T last, float j) {
    return _mm512_mask_mov_ps(x, _mm512_cmp_ps_mask(last, set1(j), _CMP_LT_OQ),
                              set1(-std::numeric_limits<float>::infinity()));
  }
  static T zero_where_neg_inf(T m) {
    return _mm512_mask_mov_ps(m, _mm512_cmp_ps_mask(m, set1(-std::numeric_limits<float>::infinity()), _CMP_EQ_OQ),
                              zero());
  }
  static T recip_or_zero(T l) {
    return _mm512_maskz_div_ps(_mm512_cmp_ps_mask(l, zero(), _CMP_NEQ_UQ), set1(1.0f), l);
  }
  // As ElementCopies's, 16 x 16 at a time (rows past `rows` and dims past D read as 0).
  static void pack_queries(const float* q, int64_t ldq, int64_t rows, int64_t lanes, int64_t D, float* Qt,
                           int64_t ldt) {
    for (int64_t i0 = 0; i0 < lanes; i0 += 16)
      for (int64_t d0 = 0; d0 < D; d0 += 16) {
        const __mmask16 m = first_lanes(D - d0);
        __m512 r[16];
        for (int i = 0; i < 16; ++i)
          r[i] = i0 + i < rows ? _mm512_maskz_loadu_ps(m, q + (i0 + i) * ldq + d0) : _mm512_setzero_ps();
        transpose16(r);
        for (int c = 0; c < 16 && d0 + c < D; ++c) _mm512_store_ps(Qt + (d0 + c) * ldt + i0, r[c]);
      }
  }
  static void unpack_outputs(const float* Ot, int64_t ldt, const float* inv, int64_t rows, int64_t D, float* out,
                             int64_t ldo) {
    for (int64_t i0 = 0; i0 < rows; i0 += 16) {
      const __m512 s = _mm512_load_ps(inv + i0);
      for (int64_t d0 = 0; d0 < D; d0 += 16) {
        const __mmask16 m = first_lanes(D - d0);
        __m512 r[16];
        for (int c = 0; c < 16; ++c)
          r[c] = d0 + c < D ? _mm512_mul_ps(_mm512_load_ps(Ot + (d0 + c) * ldt + i0), s) : _mm512_setzero_ps();
        transpose16(r);
        for (int i = 0; i < 16 && i0 + i < rows; ++i) _mm512_mask_storeu_ps(out + (i0 + i) * ldo + d0, m, r[i]);
      }
    }
  }
  static T exp(T x) {
    const __mmask16 under = _mm512_cmp_ps_mask(x, set1(kExpLo), _CMP_LT_OQ);
    x = _mm512_max_ps(_mm512_min_ps(x, set1(kExpHi)), set1(kExpLo));
    const __m512 fx =
        _mm512_roundscale_ps(_mm512_fmadd_ps(x, set1(kLog2e), set1(0.5f)), _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    x = _mm512_fnmadd_ps(fx, set1(kLn2Hi), x);
    x = _mm512_fnmadd_ps(fx, set1(kLn2Lo), x);
    const __m512 z = _mm512_mul_ps(x, x);
    __m512 y = set1(kP0);
    y = _mm512_fmadd_ps(y, x, set1(kP1));
    y = _mm512_fmadd_ps(y, x, set1(kP2));
    y = _mm512_fmadd_ps(y, x, set1(kP3));
    y = _mm512_fmadd_ps(y, x, set1(kP4));
    y = _mm512_fmadd_ps(y, x, set1(kP5));
    y = _mm512_fmadd_ps(y, z, x);
    y = _mm512_add_ps(y, set1(1.0f));
    const __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvttps_epi32(fx), _mm512_set1_epi32(127)), 23);
    y = _mm512_mul_ps(y, _mm512_castsi512_ps(e));
    return _mm512_maskz_mov_ps(static_cast<__mmask16>(~under), y);
  }
};
#include "kernels/cpu/attention_block.inc"
}  // namespace avx512
#ifdef __clang__
#pragma clang attribute pop
#else
#pragma GCC diagnostic pop
#pragma GCC pop_options
#endif
#endif

}  // namespace

size_t attn_scratch_floats(int64_t D, int64_t n) {
  return static_cast<size_t>((2 * D + 2 + std::max<int64_t>(n, 1)) * kAttnQueries);
}

bool attn_isa_available(AttnIsa isa) {
  switch (isa) {
    case AttnIsa::scalar: return true;
#if SC_ATTN_X86
    case AttnIsa::avx2: {
      static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
      return yes;
    }
    case AttnIsa::avx512: {
      static const bool yes = __builtin_cpu_supports("avx512f");
      return yes;
    }
#endif
    default: return false;
  }
}

AttnIsa attn_best_isa() {
  static const AttnIsa best = [] {
    const char* e = std::getenv("STAGECRAFT_GEMM_ROWS_AVX512");
    if (attn_isa_available(AttnIsa::avx512) && !(e && std::string(e) == "0")) return AttnIsa::avx512;
    return attn_isa_available(AttnIsa::avx2) ? AttnIsa::avx2 : AttnIsa::scalar;
  }();
  return best;
}

void attn_block(AttnIsa isa, const AttnTask& task, float* scratch) {
  switch (isa) {
#if SC_ATTN_X86
    case AttnIsa::avx512: avx512::run_block(task, scratch); return;
    case AttnIsa::avx2: avx2::run_block(task, scratch); return;
#endif
    default: scalar::run_block(task, scratch); return;
  }
}

}  // namespace stagecraft::kernels::cpu

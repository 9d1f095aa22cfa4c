#pragma once
// One attention task of the CPU backend (internal to kernels/cpu/; attention.cpp runs the
// op): up to 64 queries of one (item, head) against that head's keys and values.
//
// The block is computed transposed, queries across vector lanes: Qᵀ (D x 64) is packed
// once, Sᵀ = K·Qᵀ broadcasts one key element against 64 queries (a register tile of keys x
// query vectors), the softmax then runs down Sᵀ's columns, so each lane's max and sum are
// plain vector ops over keys with no horizontal reduction, and Oᵀ = Vᵀ·Pᵀ broadcasts one
// value element the same way (D = 72 tiles exactly, where a row layout would waste lanes).
//
// Every query's numbers are its own lane's chain, in the same order whatever the ISA, the
// lanes beside it or the batch: s_j = fma chain over d in order, t_j = fma(s_j, scale,
// bias_j), m = max_j t_j, p_j = exp(t_j - m) (one polynomial, attention_block.inc), l = Σ_j
// p_j in order, o = fma chain of v_j · p_j over j in order, out = o · (1 / l). So the
// AVX-512, AVX2 and scalar kernels give the same bits, and an item's output never depends
// on which other items share the call.
#include <cstddef>
#include <cstdint>

namespace stagecraft::kernels::cpu {

inline constexpr int64_t kAttnQueries = 64;  // queries per task (the lanes of Qᵀ, Sᵀ and Oᵀ)

struct AttnTask {
  const float* q = nullptr;  // query i of the block at q + i * ldq (D floats)
  const float* k = nullptr;  // key j at k + j * ldk
  const float* v = nullptr;  // value j at v + j * ldv
  int64_t ldq = 0, ldk = 0, ldv = 0;
  int64_t rows = 0;  // queries in the block, 1..64
  int64_t n = 0;     // keys to compute: 0..Lk (fewer when causal rules the rest out)
  int64_t D = 0;
  float scale = 1.0f;
  const float* key_bias = nullptr;  // [n]: 0 attended, -inf masked; null = all attended
  bool causal = false;
  int64_t causal_first = 0;  // causal: query i sees keys j <= causal_first + i
  float* out = nullptr;      // output row i at out + i * ldo (D floats)
  int64_t ldo = 0;
};

enum class AttnIsa { scalar, avx2, avx512 };

/// Floats of 64-byte aligned scratch one task needs (Qᵀ, Sᵀ, Oᵀ, max and 1/l per lane).
size_t attn_scratch_floats(int64_t D, int64_t n);
/// Runs one task with the given kernel (which must be available).
void attn_block(AttnIsa isa, const AttnTask& task, float* scratch);
/// Whether the kernel was compiled in and the CPU runs it.
bool attn_isa_available(AttnIsa isa);
/// The fastest available kernel; STAGECRAFT_GEMM_ROWS_AVX512=0 rules AVX-512 out here as in
/// gemm_rows (one switch for A/B runs of the AVX-512 code).
AttnIsa attn_best_isa();

}  // namespace stagecraft::kernels::cpu

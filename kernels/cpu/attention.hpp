#pragma once
// The CPU attention op with its kernel chosen by the caller (internal to kernels/cpu/ and
// its tests): the AVX-512, AVX2 and scalar kernels give the same bits (attention_block.hpp),
// and the tests check that they do.
#include "core/tensor.hpp"
#include "kernels/cpu/attention_block.hpp"
#include "kernels/ops.hpp"

namespace stagecraft::kernels::cpu {

/// cpu::attention with kernel `isa` (attn_isa_available(isa) must hold).
Tensor attention_with_isa(const Tensor& q, const Tensor& k, const Tensor& v, const ops::AttentionOptions& opt,
                          AttnIsa isa);

}  // namespace stagecraft::kernels::cpu

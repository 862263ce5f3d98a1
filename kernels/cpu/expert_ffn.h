// Routed SwiGLU experts of one MoE layer and one step, on the CPU.
//
// For each expert e with tokens, the tokens' rows of x are gathered, passed through
//   down(silu(gate(x)) * up(x))
// and added into their rows of `out`, scaled by the routing weight. An expert's weights are
// read once for all of its tokens. Experts flagged in `skip` (placed on another device by the
// scheduler) are left out. This is the one function that the fast quantized kernels replace.
#pragma once

#include <cstdint>
#include <span>

#include "kernels/tensor.h"
#include "kernels/thread_pool.h"

namespace tandem::cpu {

struct ExpertWeights {
    Tensor gate;  // [ffn_dim, hidden_dim]
    Tensor up;    // [ffn_dim, hidden_dim]
    Tensor down;  // [hidden_dim, ffn_dim]
};

struct MoeExpertsArgs {
    Tensor x;                                // [n_tokens, hidden_dim] f32
    Tensor out;                              // [n_tokens, hidden_dim] f32, accumulated into
    std::span<const ExpertWeights> experts;  // [n_experts]
    std::span<const int32_t> offsets;        // [n_experts + 1]: expert e's slots are
                                             // [offsets[e], offsets[e + 1])
    std::span<const int32_t> token_index;    // [n_slots]: the token of each slot
    std::span<const float> token_weight;     // [n_slots]: its routing weight
    std::span<const uint8_t> skip;           // empty or [n_experts]: 1 = computed elsewhere
};

void moe_experts(const MoeExpertsArgs& args, ThreadPool& pool);

// One dense SwiGLU FFN over all rows of x: out = down(silu(gate(x)) * up(x)); out is overwritten.
void swiglu_ffn(const Tensor& x, const ExpertWeights& w, const Tensor& out, ThreadPool& pool);

}  // namespace tandem::cpu

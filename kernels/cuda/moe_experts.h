// Routed SwiGLU experts of one MoE layer on a CUDA device, the semantics of cpu::moe_experts
// (kernels/cpu/expert_ffn.h): for each expert e not skipped, down(silu(gate(x)) * up(x)) of its
// tokens, scaled by the routing weight and added into those tokens' rows of `out`.
//
// Experts with at most kGemvMaxTokens tokens (decode) run in two launches for the whole layer:
// gate+up of every such expert (grid: experts x blocks of ffn rows, SiLU(gate)*up fused), then
// down (experts x blocks of hidden rows), through a device table of weight pointers; the GEMV
// inner loop of linear.cu. Experts with more tokens (prefill) gather their rows and take
// cuda::linear's cuBLAS path. Every slot's down row is kept apart, then one kernel adds each
// token's slots into `out` in slot order: no atomics, so runs repeat bit for bit.
//
// Limits: the gate/up weights of all experts computed here share one type, and the down weights
// one type (a layer's experts are quantized alike); anything else is an error.
#pragma once
#include <cstdint>
#include <span>

#include "kernels/cpu/expert_ffn.h"
#include "kernels/cuda/context.h"
#include "kernels/tensor.h"

namespace tandem::cuda {

struct MoeExpertsArgs {
    Tensor x;                                     // [n_tokens, hidden_dim] f32, device
    Tensor out;                                   // [n_tokens, hidden_dim] f32, device, += into
    std::span<const cpu::ExpertWeights> experts;  // [n_experts] device tensors (an expert
                                                  // that is skipped or has no tokens may be empty)
    std::span<const int32_t> offsets;             // host [n_experts + 1]: expert e's slots are
                                                  // [offsets[e], offsets[e + 1])
    std::span<const int32_t> token_index;         // host [n_slots]: the token of each slot
    std::span<const float> token_weight;          // host [n_slots]: its routing weight
    std::span<const uint8_t> skip;                // host, empty or [n_experts]: 1 = elsewhere
};

void moe_experts(Context& ctx, const MoeExpertsArgs& args);

}  // namespace tandem::cuda

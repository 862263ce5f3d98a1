// Routed SwiGLU experts of one MoE layer and one step, on the CPU: the fused expert kernel.
//
// For each expert e with tokens: down(silu(gate(x)) * up(x)) for its tokens, added into their
// rows of `out` scaled by the routing weight (with gpt-oss's biases and clamped activation when
// the experts and GluOptions have them). The whole layer is two parallel jobs, not one per
// expert: job 1 computes gate and up for every (expert, block of ffn rows), job 2 the down
// projection for every (expert, block of hidden rows). Activations are converted to each weight
// type's dot-product format once per step (x once, each token's intermediate once), and every
// expert's weights are read once for all of its tokens. Experts flagged in `skip` (placed on
// another device by the scheduler) are left out, so hybrid execution uses the same kernel. An
// expert with one token (decode) has no tokens to share a weight load; where the ISA has a
// several-row dot for its type (Q4_K on AVX-512) a few rows share the token's activation instead.
// An expert with enough tokens (use_tile_gemm: prefill) takes the tile path of tile_gemm.h
// instead — its rows converted to L2-sized tiles and multiplied by oneDNN's matmul — within the
// same two jobs, so busy and idle experts of one step share the threads.
//
// The kernel is four steps (expert_ffn.cpp): prepare (validate, split the experts between the
// paths, convert x), gate-up (job 1), down (the intermediate converted, then job 2) and reduce
// (the weighted sum into `out`). Everything a call needs beyond `out` comes from a ScratchArena,
// so a step allocates nothing once the arena is sized (moe_experts_scratch_bytes).
#pragma once

#include <cstdint>
#include <span>

#include "kernels/scratch_arena.h"
#include "kernels/tensor.h"
#include "kernels/thread_pool.h"

namespace tandem::cpu {

struct ExpertWeights {
    Tensor gate;  // [ffn_dim, hidden_dim]
    Tensor up;    // [ffn_dim, hidden_dim]
    Tensor down;  // [hidden_dim, ffn_dim]
    // f32 biases of gpt-oss's experts, [ffn_dim], [ffn_dim], [hidden_dim]; empty: none. Host
    // memory always (device copies of an expert carry no biases; cuda::moe_experts uploads those
    // of the experts it computes with each call).
    Tensor gate_bias, up_bias, down_bias;
    bool has_bias() const { return !gate_bias.empty() || !up_bias.empty() || !down_bias.empty(); }
};

// The gated activation of the experts' intermediate. limit 0: SwiGLU's silu(gate) * up. Else
// gpt-oss's clamped variant: g = min(gate, limit), u = clamp(up, -limit, limit),
// (u + 1) * g * sigmoid(alpha * g).
struct GluOptions {
    float limit = 0.0f;
    float alpha = 1.0f;
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
    GluOptions glu = {};
};

// Adds the experts' outputs into args.out, with the temporaries from `scratch` (under a frame of
// its own, opened on the calling thread; the arena must hold moe_experts_scratch_bytes of the
// call, or it throws before computing anything it cannot finish).
void moe_experts(const MoeExpertsArgs& args, ThreadPool& pool, ScratchArena& scratch);
// The same with an arena of its own for this call (tests, calibration, one-off callers).
void moe_experts(const MoeExpertsArgs& args, ThreadPool& pool);

// The scratch bytes a call of moe_experts takes at most, for `experts` (their weight types decide
// the activation formats, at the active ISA and tile policy), n_tokens tokens and n_slots routed
// (token, expert) pairs. Monotonic in n_tokens and n_slots, so sizing for the largest step
// covers every smaller one.
size_t moe_experts_scratch_bytes(std::span<const ExpertWeights> experts, int64_t n_tokens,
                                 int64_t n_slots, int64_t hidden);

// Throws tandem::Error unless w is a SwiGLU expert the fused kernel runs: gate and up [ffn,
// hidden] of one weight type, down [hidden, ffn], contiguous, rows in whole blocks; biases, if
// any, f32 of [ffn], [ffn], [hidden].
void check_swiglu_expert(const ExpertWeights& w, int64_t index, int64_t hidden, int64_t ffn);

// One dense SwiGLU FFN over all rows of x: out = down(silu(gate(x)) * up(x)); out is overwritten.
// Its intermediate comes from `scratch` (swiglu_ffn_scratch_bytes), freed on return.
void swiglu_ffn(const Tensor& x, const ExpertWeights& w, const Tensor& out, ThreadPool& pool,
                ScratchArena& scratch);
size_t swiglu_ffn_scratch_bytes(int64_t n_tokens, int64_t ffn);

}  // namespace tandem::cpu

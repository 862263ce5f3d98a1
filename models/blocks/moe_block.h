// The MoE block of a decoder layer: router, top-k selection, routed experts, optional shared
// expert (with its sigmoid gate for Qwen2-MoE; always on, ungated, for DeepSeek).
//
// Router (models/blocks/router.h): softmax over all experts in f32, the k largest
// probabilities, renormalised to sum to one when the config says so (Mixtral always, Qwen2/3-MoE
// and OLMoE per norm_topk_prob); DeepSeek adds sigmoid scores, a selection bias, group-limited
// choice and a scaling factor.
#pragma once

#include "models/config.h"
#include "models/decoder.h"
#include "models/expert_runner.h"
#include "scheduler/routing.h"

namespace tandem {

// logits: [n_tokens, n_experts] f32 router logits. The softmax top-k router of
// models/blocks/router.h with no groups, bias or scaling.
Routing route_tokens(const Tensor& logits, int64_t n_experts_active, bool normalize);

// The routing `w`'s router chooses for x: [n_tokens, hidden_dim] f32, normalised. Also how the
// gate lookahead predicts a later layer's experts from an earlier layer's input.
Routing route_with(const MoeWeights& w, const ModelConfig& config, const Tensor& x,
                   ThreadPool& pool);

// Who computes the routed experts, and what it needs to know about the layer. Without a runner
// every expert runs on the CPU on `pool`.
struct MoeRunnerContext {
    ExpertRunner* runner = nullptr;
    int layer = 0;
    int moe_layer = 0;
    std::span<const Routing> predicted = {};  // the gate lookahead (models/expert_runner.h)
    // Without a runner, the experts' temporaries come from here (nullptr: an arena of the call's
    // own).
    ScratchArena* scratch = nullptr;
};

// Every expert's router probability for each row of x ([n_tokens, hidden_dim]), by expert id:
// [n_tokens, n_experts]. The router of the layer with every expert kept and nothing
// renormalised or scaled: what the expert cache's MRS scores (the hybrid executor computes the
// same).
std::vector<float> router_probabilities(const MoeWeights& w, const ModelConfig& config,
                                        const Tensor& x, ThreadPool& pool);

// x: [n_tokens, hidden_dim] f32, normalised; out: [n_tokens, hidden_dim] f32, overwritten.
// If `routing` is given, the step's routing is stored there (for tests and trace recording).
void moe_block(const MoeWeights& w, const ModelConfig& config, const Tensor& x, const Tensor& out,
               ThreadPool& pool, Routing* routing = nullptr, const MoeRunnerContext& runner = {});

// The scratch bytes moe_block takes from MoeRunnerContext::scratch for n_tokens (with a runner,
// the routed experts' are the runner's own).
size_t moe_block_scratch_bytes(const MoeWeights& w, const ModelConfig& config, int64_t n_tokens,
                               bool runner);

}  // namespace tandem

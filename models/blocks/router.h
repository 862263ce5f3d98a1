// MoE routers: router logits -> per token, the chosen experts and their weights.
//
// One function covers every architecture Tandem loads, as transformers 5.24 computes them:
//   scores  = softmax(logits) (Mixtral, Qwen-MoE, OLMoE, DeepSeek-V2) or sigmoid(logits) (V3)
//   choice  = scores, + e_score_correction_bias when given (V3; it steers the choice only)
//   Greedy:             the k largest choice values
//   GroupLimitedGreedy: experts split into n_groups consecutive groups; the topk_groups groups
//                       with the largest max choice are kept, then the k largest (V2)
//   NoauxTc:            the same, ranking groups by the sum of their two largest choices (V3)
//   weights = scores of the chosen experts, / (their sum + 1e-20) if normalize,
//             * routed_scaling_factor
// All in f32. Ties go to the lower expert (and group) id; transformers' torch.topk leaves them
// unspecified, which the golden fixtures avoid by keeping a margin between choices.
#pragma once

#include <cstdint>
#include <span>

#include "kernels/tensor.h"
#include "models/config.h"
#include "scheduler/routing.h"

namespace tandem {

struct RouterOptions {
    int64_t n_experts_active = 1;
    RouterScoring scoring = RouterScoring::Softmax;
    RouterTopk topk = RouterTopk::Greedy;
    int64_t n_groups = 1;
    int64_t topk_groups = 1;
    bool normalize = false;
    float scaling = 1.0f;
};

// The options a config asks for.
RouterOptions router_options(const ModelConfig& config);

// logits: [n_tokens, n_experts] f32; bias: empty or [n_experts] (NoauxTc only).
Routing route(const Tensor& logits, const RouterOptions& options, std::span<const float> bias);

}  // namespace tandem

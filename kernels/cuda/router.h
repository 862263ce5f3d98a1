// MoE routing on a CUDA device with exactly models/blocks/router.h's semantics (every scoring
// and top-k mode, ties to the lower expert id); the per-token arithmetic is router_math.h's,
// checked against tandem::route on the CPU. One thread per token: routing is a few hundred
// operations per token, far below the matmuls around it.
#pragma once

#include <span>

#include "kernels/cuda/context.h"
#include "kernels/cuda/router_math.h"
#include "kernels/tensor.h"

namespace tandem::cuda {

// logits: [n_tokens, n_experts] f32 (device); bias: null or [n_experts] f32 (device), the
// selection bias (noaux_tc's e_score_correction_bias); ids: [n_tokens, k] i32 out; weights:
// [n_tokens, k] f32 out. options.n_experts must equal logits' second dimension; at most
// kMaxRouterExperts experts and kMaxRouterGroups groups.
struct RouteArgs {
    Tensor logits;
    Tensor bias;  // empty: none
    Tensor ids;
    Tensor weights;
};
void route(Context& ctx, const RouterParams& options, const RouteArgs& args);

}  // namespace tandem::cuda

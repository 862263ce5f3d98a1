#include "models/blocks/moe_block.h"

#include <algorithm>

#include "kernels/cpu/activation.h"
#include "kernels/cpu/linear.h"
#include "kernels/error.h"
#include "models/blocks/router.h"

namespace tandem {

Routing route_tokens(const Tensor& logits, int64_t k, bool normalize) {
    return route(logits, {.n_experts_active = k, .normalize = normalize}, {});
}

Routing route_with(const MoeWeights& w, const ModelConfig& c, const Tensor& x, ThreadPool& pool) {
    OwnedTensor logits = make_tensor(DType::F32, {x.dim(0), c.n_experts});
    cpu::linear(x, w.router, w.router_logit_bias, logits.view, pool);
    std::vector<float> bias;
    if (!w.router_bias.empty()) {
        bias.resize(size_t(c.n_experts));
        cpu::row_to_f32(w.router_bias.data(), w.router_bias.dtype(), c.n_experts, bias.data());
    }
    return route(logits.view, router_options(c), bias);
}

std::vector<float> router_probabilities(const MoeWeights& w, const ModelConfig& c, const Tensor& x,
                                        ThreadPool& pool) {
    const int64_t n_tokens = x.dim(0), n_experts = c.n_experts;
    OwnedTensor logits = make_tensor(DType::F32, {n_tokens, n_experts});
    cpu::linear(x, w.router, w.router_logit_bias, logits.view, pool);
    RouterOptions all = router_options(c);
    all.n_experts_active = n_experts;
    all.topk = RouterTopk::Greedy;
    all.normalize = false;
    all.scaling = 1.0f;
    const Routing r = route(logits.view, all, {});
    std::vector<float> probs(size_t(n_tokens * n_experts), 0.0f);
    for (int64_t t = 0; t < n_tokens; ++t)
        for (int64_t i = 0; i < n_experts; ++i) {
            const size_t at = size_t(t * n_experts + i);
            probs[size_t(t * n_experts + r.experts[at])] = r.weights[at];
        }
    return probs;
}

void moe_block(const MoeWeights& w, const ModelConfig& c, const Tensor& x, const Tensor& out,
               ThreadPool& pool, Routing* routing_out, const MoeRunnerContext& rc) {
    const int64_t n_tokens = x.dim(0), hidden = c.hidden_dim;
    ScratchArena own;
    ScratchArena& scratch = rc.scratch != nullptr ? *rc.scratch : own;
    if (rc.scratch == nullptr)
        own.reserve(moe_block_scratch_bytes(w, c, n_tokens, rc.runner != nullptr));
    Routing routing;
    if (rc.runner == nullptr || !rc.runner->replace_routing(rc.moe_layer, n_tokens, routing))
        routing = route_with(w, c, x, pool);
    std::fill_n(out.data_as<float>(), n_tokens * hidden, 0.0f);
    if (rc.runner != nullptr) {
        rc.runner->run({.layer = rc.layer,
                        .moe_layer = rc.moe_layer,
                        .weights = &w,
                        .x = x,
                        .routing = &routing,
                        .predicted = rc.predicted,
                        .out = out},
                       pool);
    } else {
        const ExpertGroups groups = group_by_expert(routing, c.n_experts);
        cpu::moe_experts({.x = x,
                          .out = out,
                          .experts = w.experts,
                          .offsets = groups.offsets,
                          .token_index = groups.token_index,
                          .token_weight = groups.token_weight,
                          .glu = glu_options(c)},
                         pool, scratch);
    }

    if (c.shared_expert_ffn_dim > 0) {
        const ScratchArena::Frame frame(scratch);
        const Tensor shared =
            scratch.take_tensor(DType::F32, {n_tokens, hidden}, "shared expert output");
        cpu::swiglu_ffn(x, w.shared, shared, pool, scratch);
        float* gate_row = scratch.take<float>(hidden, "shared expert gate");
        if (c.shared_expert_gated)
            cpu::row_to_f32(w.shared_expert_gate.data(), w.shared_expert_gate.dtype(), hidden,
                            gate_row);
        for (int64_t t = 0; t < n_tokens; ++t) {
            const float* xt = x.data_as<const float>() + t * hidden;
            const float gate =
                c.shared_expert_gated ? cpu::sigmoid(cpu::dot_f32(xt, gate_row, hidden)) : 1.0f;
            const float* s = shared.data_as<const float>() + t * hidden;
            float* o = out.data_as<float>() + t * hidden;
            for (int64_t i = 0; i < hidden; ++i)
                o[i] += gate * s[i];
        }
    }
    if (routing_out != nullptr) *routing_out = std::move(routing);
}

size_t moe_block_scratch_bytes(const MoeWeights& w, const ModelConfig& c, int64_t n_tokens,
                               bool runner) {
    // The routed experts and the shared expert take their scratch one after the other.
    size_t routed = 0, shared = 0;
    if (!runner)
        routed = cpu::moe_experts_scratch_bytes(w.experts, n_tokens, n_tokens * c.n_experts_active,
                                                c.hidden_dim);
    if (c.shared_expert_ffn_dim > 0)
        shared = ScratchArena::rounded(size_t(n_tokens * c.hidden_dim) * 4) +
                 ScratchArena::rounded(size_t(c.hidden_dim) * 4) +
                 cpu::swiglu_ffn_scratch_bytes(n_tokens, c.shared_expert_ffn_dim);
    return std::max(routed, shared);
}

}  // namespace tandem

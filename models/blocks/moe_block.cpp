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
                         pool);
    }

    if (c.shared_expert_ffn_dim > 0) {
        OwnedTensor shared = make_tensor(DType::F32, {n_tokens, hidden});
        cpu::swiglu_ffn(x, w.shared, shared.view, pool);
        std::vector<float> gate_row(static_cast<size_t>(hidden));
        if (c.shared_expert_gated)
            cpu::row_to_f32(w.shared_expert_gate.data(), w.shared_expert_gate.dtype(), hidden,
                            gate_row.data());
        for (int64_t t = 0; t < n_tokens; ++t) {
            const float* xt = x.data_as<const float>() + t * hidden;
            const float gate = c.shared_expert_gated
                                   ? cpu::sigmoid(cpu::dot_f32(xt, gate_row.data(), hidden))
                                   : 1.0f;
            const float* s = shared.view.data_as<const float>() + t * hidden;
            float* o = out.data_as<float>() + t * hidden;
            for (int64_t i = 0; i < hidden; ++i)
                o[i] += gate * s[i];
        }
    }
    if (routing_out != nullptr) *routing_out = std::move(routing);
}

}  // namespace tandem

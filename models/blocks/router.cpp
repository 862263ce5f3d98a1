#include "models/blocks/router.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "kernels/cpu/activation.h"
#include "kernels/error.h"

namespace tandem {

RouterOptions router_options(const ModelConfig& c) {
    return {.n_experts_active = c.n_experts_active,
            .scoring = c.router_scoring,
            .topk = c.router_topk,
            .n_groups = c.n_groups,
            .topk_groups = c.topk_groups,
            .normalize = c.norm_topk_prob,
            .scaling = float(c.routed_scaling_factor)};
}

namespace {

void check_options(const RouterOptions& o, int64_t n_experts, std::span<const float> bias) {
    const int64_t k = o.n_experts_active;
    if (k <= 0 || k > n_experts) fail("router: top-k ", k, " outside [1, ", n_experts, "]");
    if (!bias.empty() && int64_t(bias.size()) != n_experts)
        fail("router: ", bias.size(), " bias values for ", n_experts, " experts");
    if (o.topk == RouterTopk::Greedy) return;
    if (o.n_groups <= 0 || n_experts % o.n_groups != 0)
        fail("router: ", n_experts, " experts do not split into ", o.n_groups, " groups");
    const int64_t group_size = n_experts / o.n_groups;
    if (o.topk_groups <= 0 || o.topk_groups > o.n_groups || k > o.topk_groups * group_size)
        fail("router: top-k ", k, " from ", o.topk_groups, " of ", o.n_groups, " groups of ",
             group_size, " experts");
    if (o.topk == RouterTopk::NoauxTc && group_size < 2)
        fail("router: noaux_tc ranks groups by their top-2 experts; groups have ", group_size);
}

// The indices of the k largest values, largest first, ties to the lower index.
void top_indices(std::span<const float> values, int64_t k, std::vector<int32_t>& order) {
    order.resize(values.size());
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int32_t a, int32_t b) {
        return values[size_t(a)] > values[size_t(b)] ||
               (values[size_t(a)] == values[size_t(b)] && a < b);
    });
    order.resize(size_t(k));
}

}  // namespace

Routing route(const Tensor& logits, const RouterOptions& o, std::span<const float> bias) {
    const int64_t n_tokens = logits.dim(0), n_experts = logits.dim(1), k = o.n_experts_active;
    check_options(o, n_experts, bias);
    Routing routing{.n_tokens = n_tokens, .n_experts_active = k, .experts = {}, .weights = {}};
    routing.experts.resize(size_t(n_tokens * k));
    routing.weights.resize(size_t(n_tokens * k));
    const int64_t group_size = n_experts / std::max<int64_t>(o.n_groups, 1);
    std::vector<float> scores(static_cast<size_t>(n_experts));
    std::vector<float> choice(static_cast<size_t>(n_experts));
    std::vector<float> group_scores(size_t(std::max<int64_t>(o.n_groups, 1)));
    std::vector<int32_t> order, groups;
    for (int64_t t = 0; t < n_tokens; ++t) {
        const float* row = logits.data_as<const float>() + t * n_experts;
        if (o.scoring == RouterScoring::Softmax) {
            const float max_logit = *std::max_element(row, row + n_experts);
            float total = 0.0f;
            for (int64_t e = 0; e < n_experts; ++e)
                total += scores[size_t(e)] = std::exp(row[e] - max_logit);
            for (float& p : scores)
                p /= total;
        } else {
            for (int64_t e = 0; e < n_experts; ++e)
                scores[size_t(e)] = cpu::sigmoid(row[e]);
        }
        for (int64_t e = 0; e < n_experts; ++e)
            choice[size_t(e)] = scores[size_t(e)] + (bias.empty() ? 0.0f : bias[size_t(e)]);

        if (o.topk != RouterTopk::Greedy) {
            for (int64_t g = 0; g < o.n_groups; ++g) {
                const std::span<const float> members(choice.data() + g * group_size,
                                                     size_t(group_size));
                if (o.topk == RouterTopk::GroupLimitedGreedy) {
                    group_scores[size_t(g)] = *std::max_element(members.begin(), members.end());
                } else {
                    top_indices(members, 2, order);
                    group_scores[size_t(g)] = members[size_t(order[0])] + members[size_t(order[1])];
                }
            }
            top_indices(group_scores, o.topk_groups, groups);
            std::vector<bool> kept(size_t(o.n_groups), false);
            for (int32_t g : groups)
                kept[size_t(g)] = true;
            // Experts of other groups can never be chosen.
            for (int64_t e = 0; e < n_experts; ++e)
                if (!kept[size_t(e / group_size)]) choice[size_t(e)] = -INFINITY;
        }
        top_indices(choice, k, order);
        float selected = 0.0f;
        for (int32_t e : order)
            selected += scores[size_t(e)];
        const float denominator = o.normalize ? selected + 1e-20f : 1.0f;
        for (int64_t j = 0; j < k; ++j) {
            const int32_t e = order[size_t(j)];
            routing.experts[size_t(t * k + j)] = e;
            routing.weights[size_t(t * k + j)] = scores[size_t(e)] / denominator * o.scaling;
        }
    }
    return routing;
}

}  // namespace tandem

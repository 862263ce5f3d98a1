// The per-token routing arithmetic of kernels/cuda/router.cu, shared with the CPU twin test so
// that it is checked against models/blocks/router.cpp (tandem::route) on every CI run: scores
// (softmax or sigmoid, f32, summed in expert order), choice = score + optional bias, the group
// filter (max of a group, or the sum of its top two for noaux_tc), the top k with ties to the
// lower id, and the weights (normalised by their sum + 1e-20, times the scaling).
//
// The top k is found by k passes that each take the best (value, id) pair ranked below the
// previous one: no sort and no scratch beyond the scores, the order of std::partial_sort with
// the CPU's comparator.
#pragma once

#include <cmath>
#include <cstdint>

#include "kernels/cuda/host_device.h"

namespace tandem::cuda {

enum class RouterScoringKind : int32_t { Softmax, Sigmoid };
enum class RouterTopkKind : int32_t { Greedy, GroupLimitedGreedy, NoauxTc };

// The kernels' mirror of tandem::RouterOptions (models/ sits above kernels/).
struct RouterParams {
    int32_t n_experts = 0;
    int32_t k = 1;  // n_experts_active
    RouterScoringKind scoring = RouterScoringKind::Softmax;
    RouterTopkKind topk = RouterTopkKind::Greedy;
    int32_t n_groups = 1;
    int32_t topk_groups = 1;
    bool normalize = false;
    float scaling = 1.0f;
};

// Experts and groups a token may have on the device (per-thread arrays).
inline constexpr int32_t kMaxRouterExperts = 512;
inline constexpr int32_t kMaxRouterGroups = 64;

// Whether (a, ia) ranks before (b, ib): larger value first, ties to the lower id.
TANDEM_HD bool ranks_before(float a, int32_t ia, float b, int32_t ib) {
    return a > b || (a == b && ia < ib);
}

// The best of values[0, n) ranked after (prev, prev_id) (prev_id < 0: the best of all), or -1.
TANDEM_HD int32_t next_best(const float* values, int32_t n, float prev, int32_t prev_id) {
    int32_t best = -1;
    for (int32_t i = 0; i < n; ++i) {
        if (prev_id >= 0 && !ranks_before(prev, prev_id, values[i], i)) continue;
        if (best < 0 || ranks_before(values[i], i, values[best], best)) best = i;
    }
    return best;
}

// One token: logits [n_experts] -> ids [k], weights [k]. scores and choice are scratch of
// n_experts floats; bias may be null.
TANDEM_HD void route_token(const RouterParams& p, const float* logits, const float* bias,
                           float* scores, float* choice, int32_t* ids, float* weights) {
    const int32_t n = p.n_experts;
    if (p.scoring == RouterScoringKind::Softmax) {
        float max_logit = logits[0];
        for (int32_t e = 1; e < n; ++e)
            max_logit = logits[e] > max_logit ? logits[e] : max_logit;
        float total = 0.0f;
        for (int32_t e = 0; e < n; ++e)
            total += scores[e] = expf(logits[e] - max_logit);
        for (int32_t e = 0; e < n; ++e)
            scores[e] /= total;
    } else {
        for (int32_t e = 0; e < n; ++e)
            scores[e] = 1.0f / (1.0f + expf(-logits[e]));
    }
    for (int32_t e = 0; e < n; ++e)
        choice[e] = scores[e] + (bias != nullptr ? bias[e] : 0.0f);

    if (p.topk != RouterTopkKind::Greedy) {
        const int32_t group_size = n / p.n_groups;
        float group_scores[kMaxRouterGroups];
        for (int32_t g = 0; g < p.n_groups; ++g) {
            const float* members = choice + g * group_size;
            const int32_t first = next_best(members, group_size, 0.0f, -1);
            if (p.topk == RouterTopkKind::GroupLimitedGreedy) {
                group_scores[g] = members[first];
            } else {
                const int32_t second = next_best(members, group_size, members[first], first);
                group_scores[g] = members[first] + members[second];
            }
        }
        bool kept[kMaxRouterGroups] = {};
        float prev = 0.0f;
        int32_t prev_id = -1;
        for (int32_t j = 0; j < p.topk_groups; ++j) {
            prev_id = next_best(group_scores, p.n_groups, prev, prev_id);
            prev = group_scores[prev_id];
            kept[prev_id] = true;
        }
        // Experts of other groups can never be chosen.
        for (int32_t e = 0; e < n; ++e)
            if (!kept[e / group_size]) choice[e] = -INFINITY;
    }
    float prev = 0.0f;
    int32_t prev_id = -1;
    float selected = 0.0f;
    for (int32_t j = 0; j < p.k; ++j) {
        prev_id = next_best(choice, n, prev, prev_id);
        prev = choice[prev_id];
        ids[j] = prev_id;
        selected += scores[prev_id];
    }
    const float denominator = p.normalize ? selected + 1e-20f : 1.0f;
    for (int32_t j = 0; j < p.k; ++j)
        weights[j] = scores[ids[j]] / denominator * p.scaling;
}

}  // namespace tandem::cuda

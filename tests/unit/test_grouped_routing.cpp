// DeepSeek's routers (models/blocks/router.h) against a float64 reference written from
// transformers' DeepseekV2TopkRouter / DeepseekV3TopkRouter: group-limited greedy (softmax, max
// per group), noaux_tc (sigmoid + selection bias, top-2 sum per group, renormalised), and the
// routed scaling factor. The selection must match exactly and the weights to 1e-6 relative to
// the scaling factor, except for tokens whose choice is within 1e-5 of flipping in float64
// (sigmoid scores near 1 plus a bias do tie in f32 now and then), which are counted, not
// compared.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <set>

#include "kernels/error.h"
#include "models/blocks/router.h"
#include "tests/test_util.h"

namespace tandem {
namespace {

struct Reference {
    std::set<int> experts;
    std::vector<double> weight;  // [n_experts], 0 unless chosen
    // How far the choice is from flipping: the smallest gap, at the group cut and at the expert
    // cut, between the last one kept and the first one left out. f32 scores cannot be expected
    // to agree with float64 on a choice closer than their rounding.
    double margin = 1e300;
};

// v[order[k - 1]] - v[order[k]] for v sorted descending by `order`; infinite when nothing is
// left out.
double cut_gap(const std::vector<double>& v, int k) {
    if (k >= int(v.size())) return 1e300;
    std::vector<double> sorted = v;
    std::sort(sorted.rbegin(), sorted.rend());
    return sorted[size_t(k - 1)] - sorted[size_t(k)];
}

std::vector<int> top(const std::vector<double>& v, int k) {
    std::vector<int> order(v.size());
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [&](int a, int b) { return v[a] > v[b]; });
    order.resize(size_t(k));
    return order;
}

Reference reference(const float* logits, int n_experts, const RouterOptions& o,
                    const std::vector<float>& bias) {
    std::vector<double> scores(static_cast<size_t>(n_experts));
    std::vector<double> choice(static_cast<size_t>(n_experts));
    if (o.scoring == RouterScoring::Softmax) {
        double total = 0;
        for (int e = 0; e < n_experts; ++e)
            total += scores[e] = std::exp(double(logits[e]));
        for (double& s : scores)
            s /= total;
    } else {
        for (int e = 0; e < n_experts; ++e)
            scores[e] = 1.0 / (1.0 + std::exp(-double(logits[e])));
    }
    for (int e = 0; e < n_experts; ++e)
        choice[e] = scores[e] + (bias.empty() ? 0.0 : bias[e]);
    double group_margin = 1e300;
    if (o.topk != RouterTopk::Greedy) {
        const int size = n_experts / int(o.n_groups);
        std::vector<double> group(size_t(o.n_groups));
        for (int g = 0; g < o.n_groups; ++g) {
            std::vector<double> members(choice.begin() + g * size, choice.begin() + (g + 1) * size);
            std::sort(members.rbegin(), members.rend());
            group[g] = o.topk == RouterTopk::NoauxTc ? members[0] + members[1] : members[0];
        }
        group_margin = cut_gap(group, int(o.topk_groups));
        const std::vector<int> kept = top(group, int(o.topk_groups));
        for (int e = 0; e < n_experts; ++e)
            if (std::find(kept.begin(), kept.end(), e / size) == kept.end()) choice[e] = -1e300;
    }
    Reference ref{.experts = {},
                  .weight = std::vector<double>(size_t(n_experts), 0.0),
                  .margin = std::min(group_margin, cut_gap(choice, int(o.n_experts_active)))};
    double sum = 0;
    for (int e : top(choice, int(o.n_experts_active))) {
        ref.experts.insert(e);
        sum += scores[e];
    }
    for (int e : ref.experts)
        ref.weight[e] = scores[e] / (o.normalize ? sum : 1.0) * o.scaling;
    return ref;
}

void check_against_reference(const RouterOptions& o, int n_experts, bool with_bias, uint64_t seed) {
    std::mt19937_64 rng(seed);
    const int n_tokens = 64;
    const std::vector<float> logits = test::random_floats(rng, size_t(n_tokens * n_experts), 2);
    const std::vector<float> bias =
        with_bias ? test::random_floats(rng, size_t(n_experts), 0.2f) : std::vector<float>{};
    const Routing r = route(
        Tensor(const_cast<float*>(logits.data()), DType::F32, {n_tokens, n_experts}), o, bias);
    ASSERT_EQ(r.experts.size(), size_t(n_tokens * o.n_experts_active));
    int outside_plain_top_k = 0;  // tokens where the groups or the bias changed the choice
    int near_ties = 0;
    for (int t = 0; t < n_tokens; ++t) {
        const Reference ref = reference(logits.data() + t * n_experts, n_experts, o, bias);
        if (ref.margin < 1e-5) {  // a coin toss in f32; seen once in a few thousand runs
            ++near_ties;
            continue;
        }
        std::set<int> got;
        for (int j = 0; j < o.n_experts_active; ++j) {
            const int e = r.experts[size_t(t * o.n_experts_active + j)];
            got.insert(e);
            EXPECT_NEAR(r.weights[size_t(t * o.n_experts_active + j)], ref.weight[e],
                        1e-6 * o.scaling)
                << "token " << t << " expert " << e;
        }
        EXPECT_EQ(got, ref.experts) << "token " << t;
        std::vector<double> plain(logits.begin() + t * n_experts,
                                  logits.begin() + (t + 1) * n_experts);
        const std::vector<int> greedy = top(plain, int(o.n_experts_active));
        outside_plain_top_k += std::set<int>(greedy.begin(), greedy.end()) != got;
    }
    // The grouped/biased choice must actually differ from plain top-k somewhere, or this test
    // would pass for a router that ignores groups and bias.
    if (o.topk != RouterTopk::Greedy) {
        EXPECT_GT(outside_plain_top_k, 0);
    }
    EXPECT_LE(near_ties, 2) << "of " << n_tokens << " tokens too close to call";
}

TEST(GroupedRouting, GroupLimitedGreedySoftmaxMatchesFloat64) {
    TANDEM_SEEDED(seed);
    check_against_reference({.n_experts_active = 3,
                             .scoring = RouterScoring::Softmax,
                             .topk = RouterTopk::GroupLimitedGreedy,
                             .n_groups = 4,
                             .topk_groups = 2,
                             .normalize = false,
                             .scaling = 2.0f},
                            16, false, seed);
}

TEST(GroupedRouting, NoauxTcSigmoidWithBiasMatchesFloat64) {
    TANDEM_SEEDED(seed);
    for (bool normalize : {true, false})
        check_against_reference({.n_experts_active = 4,
                                 .scoring = RouterScoring::Sigmoid,
                                 .topk = RouterTopk::NoauxTc,
                                 .n_groups = 8,
                                 .topk_groups = 3,
                                 .normalize = normalize,
                                 .scaling = 2.5f},
                                32, true, seed);
}

TEST(GroupedRouting, GreedyWithScalingMatchesFloat64) {
    TANDEM_SEEDED(seed);
    check_against_reference({.n_experts_active = 6, .scaling = 16.0f}, 64, false, seed);
}

TEST(GroupedRouting, BiasSteersTheChoiceButNotTheWeights) {
    // Expert 0 has the largest score, expert 3 the smallest; a bias lifts 3 above 0 in the
    // choice, and 3's weight is still its own sigmoid score.
    std::vector<float> logits = {3.0f, 1.0f, 0.5f, -1.0f};
    const std::vector<float> bias = {0.0f, 0.0f, 0.0f, 1.0f};
    const RouterOptions o{.n_experts_active = 1,
                          .scoring = RouterScoring::Sigmoid,
                          .topk = RouterTopk::NoauxTc,
                          .n_groups = 2,
                          .topk_groups = 2};
    const Routing r = route(Tensor(logits.data(), DType::F32, {1, 4}), o, bias);
    EXPECT_EQ(r.experts[0], 3);
    EXPECT_NEAR(r.weights[0], 1.0 / (1.0 + std::exp(1.0)), 1e-7);
}

TEST(GroupedRouting, RejectsGroupsThatCannotSupplyTopK) {
    std::vector<float> logits(8, 0.0f);
    const Tensor t(logits.data(), DType::F32, {1, 8});
    EXPECT_THROW(route(t,
                       {.n_experts_active = 5,
                        .topk = RouterTopk::GroupLimitedGreedy,
                        .n_groups = 4,
                        .topk_groups = 2},
                       {}),
                 Error);
    EXPECT_THROW(route(t, {.n_experts_active = 2, .topk = RouterTopk::NoauxTc, .n_groups = 3}, {}),
                 Error);
}

}  // namespace
}  // namespace tandem

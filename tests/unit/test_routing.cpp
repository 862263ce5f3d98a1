#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "kernels/error.h"
#include "models/blocks/moe_block.h"
#include "scheduler/routing.h"
#include "tests/test_util.h"

namespace tandem {
namespace {

TEST(Routing, GroupsSlotsByExpertKeepingTokenOrder) {
    Routing r{.n_tokens = 3,
              .n_experts_active = 2,
              .experts = {2, 0, 0, 3, 2, 3},
              .weights = {.1f, .2f, .3f, .4f, .5f, .6f}};
    const ExpertGroups g = group_by_expert(r, 5);
    EXPECT_EQ(g.offsets, (std::vector<int32_t>{0, 2, 2, 4, 6, 6}));
    EXPECT_EQ(g.token_index, (std::vector<int32_t>{0, 1, 0, 2, 1, 2}));
    EXPECT_EQ(g.token_weight, (std::vector<float>{.2f, .3f, .1f, .5f, .4f, .6f}));
    EXPECT_EQ(g.tokens_of(1), 0);
    r.experts[0] = 5;
    EXPECT_THROW(group_by_expert(r, 5), Error);
}

TEST(Routing, RouterPicksTopKAndNormalises) {
    TANDEM_SEEDED(seed);
    std::mt19937_64 rng(seed);
    const int n = 6, e = 9, k = 3;
    auto logits = test::random_floats(rng, n * e, 2.0f);
    const Tensor t(logits.data(), DType::F32, {n, e});
    for (bool normalize : {false, true}) {
        const Routing r = route_tokens(t, k, normalize);
        for (int i = 0; i < n; ++i) {
            std::vector<double> p(e);
            double total = 0;
            for (int j = 0; j < e; ++j)
                total += p[j] = std::exp(double(logits[i * e + j]));
            std::vector<int> order(e);
            std::iota(order.begin(), order.end(), 0);
            std::sort(order.begin(), order.end(), [&](int a, int b) { return p[a] > p[b]; });
            double selected = 0;
            for (int j = 0; j < k; ++j)
                selected += p[order[j]] / total;
            for (int j = 0; j < k; ++j) {
                EXPECT_EQ(r.experts[i * k + j], order[j]);
                const double want = p[order[j]] / total / (normalize ? selected : 1.0);
                EXPECT_NEAR(r.weights[i * k + j], want, 1e-6);
            }
        }
    }
}

TEST(Routing, CpuOnlyPlanPutsEveryExpertOnTheCpu) {
    const LayerPlan plan = plan_cpu_only(7);
    ASSERT_EQ(plan.placement.size(), 7u);
    for (auto p : plan.placement)
        EXPECT_EQ(p, ExpertPlacement::Cpu);
}

}  // namespace
}  // namespace tandem

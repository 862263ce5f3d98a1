// Prefetcher: impact ordering on constructed cases, late copies, the tolerance, the expected
// value (probability of use) and its calibration from the lookahead's recorded accuracy.
#include <gtest/gtest.h>

#include "kernels/error.h"
#include "scheduler/prefetcher.h"

namespace tandem {
namespace {

// GPU-friendly costs: every token on the CPU costs 1 ms, an expert on the GPU 0.1 ms, a copy
// 0.2 ms. Making a miss resident then saves about its CPU time.
const CostModel kCost{.cpu_a_ms = 0.0, .cpu_b_ms = 1.0, .gpu_a_ms = 0.1, .transfer_ms = 0.2};

TEST(Prefetcher, IssuesInDescendingImpact) {
    // Layer 1: misses with 1, 5 and 3 tokens; expert 3 is resident already.
    const std::vector<int32_t> tokens = {1, 5, 3, 2};
    const std::vector<uint8_t> resident = {0, 0, 0, 1};
    const std::vector<PrefetchLayer> layers = {
        {.layer = 1, .predicted_tokens = tokens, .resident = resident, .starts_in_ms = 10.0}};
    const PrefetchInput in{.cost = kCost, .planner = PlannerKind::Static, .layers = layers};
    const double i0 = prefetch_impact_ms(in, layers[0], 0);
    const double i1 = prefetch_impact_ms(in, layers[0], 1);
    const double i2 = prefetch_impact_ms(in, layers[0], 2);
    EXPECT_GT(i1, i2);
    EXPECT_GT(i2, i0);
    EXPECT_GT(i0, 0.0);
    EXPECT_EQ(prefetch_impact_ms(in, layers[0], 3), 0.0) << "resident: nothing to gain";
    const auto reqs = plan_prefetches(in);
    ASSERT_EQ(reqs.size(), 3u);
    EXPECT_EQ(reqs[0].expert, 1);
    EXPECT_EQ(reqs[1].expert, 2);
    EXPECT_EQ(reqs[2].expert, 0);
    EXPECT_DOUBLE_EQ(reqs[0].impact_ms, i1);
    EXPECT_DOUBLE_EQ(reqs[2].finish_ms, 0.6);
}

TEST(Prefetcher, RespectsEachLayersDeadlineAndTheCopyEngine) {
    const std::vector<int32_t> near_tokens = {4, 0, 0, 0};
    const std::vector<int32_t> far_tokens = {0, 9, 1, 0};
    const std::vector<uint8_t> none(4, 0);
    const std::vector<PrefetchLayer> layers = {
        {.layer = 1, .predicted_tokens = near_tokens, .resident = none, .starts_in_ms = 0.5},
        {.layer = 2, .predicted_tokens = far_tokens, .resident = none, .starts_in_ms = 3.0}};
    // The copy engine is busy for 0.4 ms: layer 1's copy would land 0.1 ms into the layer,
    // still far better than 4 ms on the CPU, so it is issued with its late arrival's impact,
    // after layer 2's larger one.
    const PrefetchInput in{
        .cost = kCost, .planner = PlannerKind::Static, .layers = layers, .copy_free_in_ms = 0.4};
    const auto reqs = plan_prefetches(in);
    ASSERT_EQ(reqs.size(), 3u);
    EXPECT_EQ(reqs[0].layer, 2);
    EXPECT_EQ(reqs[0].expert, 1);
    EXPECT_DOUBLE_EQ(reqs[0].start_ms, 0.4);
    EXPECT_EQ(reqs[1].layer, 1);
    EXPECT_NEAR(reqs[1].finish_ms, 0.8, 1e-12);
    EXPECT_NEAR(reqs[1].impact_ms, 4.0 - (0.8 - 0.5) - 0.1, 1e-9) << "the late arrival's gain";
    EXPECT_EQ(reqs[2].expert, 2);
    // A layer that starts before the copy could help at all gets nothing: 1 token on the CPU
    // (1 ms) against a copy landing 1.5 ms into the layer.
    const std::vector<int32_t> one = {1, 0, 0, 0};
    const std::vector<PrefetchLayer> too_late = {
        {.layer = 1, .predicted_tokens = one, .resident = none, .starts_in_ms = 0.0}};
    EXPECT_TRUE(plan_prefetches({.cost = kCost,
                                 .planner = PlannerKind::Static,
                                 .layers = too_late,
                                 .copy_free_in_ms = 1.3})
                    .empty());
    // With a free copy engine the near layer's expert fits, ranked by its impact (4 ms < 9 ms).
    const PrefetchInput free_in{.cost = kCost, .planner = PlannerKind::Static, .layers = layers};
    const auto all = plan_prefetches(free_in);
    ASSERT_EQ(all.size(), 3u);
    EXPECT_EQ(all[0].expert, 1);
    EXPECT_EQ(all[1].layer, 1);
    // A limit on requests (free slots) cuts the list.
    const PrefetchInput limited{
        .cost = kCost, .planner = PlannerKind::Static, .layers = layers, .max_requests = 1};
    EXPECT_EQ(plan_prefetches(limited).size(), 1u);
}

TEST(Prefetcher, StopsWhenResidencyWouldNotHelp) {
    // The CPU is faster than the GPU here: no copy can shorten the layer.
    const CostModel cpu_fast{.cpu_a_ms = 0.01, .gpu_a_ms = 5.0, .transfer_ms = 0.2};
    const std::vector<int32_t> tokens = {1, 1, 1};
    const std::vector<uint8_t> none(3, 0);
    const std::vector<PrefetchLayer> layers = {
        {.layer = 4, .predicted_tokens = tokens, .resident = none, .starts_in_ms = 100.0}};
    EXPECT_TRUE(plan_prefetches({.cost = cpu_fast, .layers = layers}).empty());
}

TEST(Prefetcher, NoCopyForAnImpactWithinTheTolerance) {
    // Residency changes the layer by 1e-10 ms: rounding, not a gain worth a copy.
    const CostModel even{.cpu_a_ms = 0.3, .gpu_a_ms = 0.3 - 1e-10, .transfer_ms = 0.2};
    const std::vector<int32_t> tokens = {1};
    const std::vector<uint8_t> none(1, 0);
    const std::vector<PrefetchLayer> layers = {
        {.layer = 1, .predicted_tokens = tokens, .resident = none, .starts_in_ms = 10.0}};
    for (PlannerKind planner : {PlannerKind::Static, PlannerKind::HybriMoe, PlannerKind::CpuOnly})
        EXPECT_TRUE(plan_prefetches({.cost = even, .planner = planner, .layers = layers}).empty())
            << planner_name(planner);
}

TEST(Prefetcher, ExpectedImpactWeighsTheGainByTheChanceOfUse) {
    // Layer 1's expert saves 5 ms but is used with probability 0.2 (expected 1 ms); layer 2's
    // saves 2 ms with probability 0.9 (1.8 ms): layer 2's goes first.
    const std::vector<int32_t> t1 = {5, 0}, t2 = {0, 2};
    const std::vector<uint8_t> none(2, 0);
    const std::vector<PrefetchLayer> layers = {{.layer = 1,
                                                .predicted_tokens = t1,
                                                .resident = none,
                                                .starts_in_ms = 10.0,
                                                .use_probability = 0.2},
                                               {.layer = 2,
                                                .predicted_tokens = t2,
                                                .resident = none,
                                                .starts_in_ms = 20.0,
                                                .use_probability = 0.9}};
    const auto reqs =
        plan_prefetches({.cost = kCost, .planner = PlannerKind::Static, .layers = layers});
    ASSERT_EQ(reqs.size(), 2u);
    EXPECT_EQ(reqs[0].layer, 2);
    EXPECT_NEAR(reqs[0].impact_ms, 0.9 * (2.0 - 0.1), 1e-9);
    EXPECT_NEAR(reqs[1].impact_ms, 0.2 * (5.0 - 0.1), 1e-9);
    // Probability 0: nothing is worth a copy.
    std::vector<PrefetchLayer> never = layers;
    for (PrefetchLayer& l : never)
        l.use_probability = 0.0;
    EXPECT_TRUE(
        plan_prefetches({.cost = kCost, .planner = PlannerKind::Static, .layers = never}).empty());
}

TEST(Prefetcher, LookaheadAccuracyCalibratesTheProbabilityPerDistance) {
    LookaheadAccuracy acc(3);
    EXPECT_DOUBLE_EQ(acc.probability(1), 0.5) << "no evidence yet: an even chance";
    for (int i = 0; i < 100; ++i) {
        acc.record(1, 8, 7);  // 7 of 8 predicted experts used one layer ahead
        acc.record(3, 8, 2);
    }
    EXPECT_NEAR(acc.probability(1), 0.875, 0.01);
    EXPECT_NEAR(acc.probability(3), 0.25, 0.01);
    EXPECT_THROW(acc.probability(4), Error);
}

}  // namespace
}  // namespace tandem

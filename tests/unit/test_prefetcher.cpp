// Prefetcher: impact ordering on constructed cases, the deadline of each layer, and stopping at
// impact <= 0.
#include <gtest/gtest.h>

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
    // The copy engine is busy for 0.4 ms: nothing lands before layer 1 starts at 0.5.
    const PrefetchInput in{
        .cost = kCost, .planner = PlannerKind::Static, .layers = layers, .copy_free_in_ms = 0.4};
    const auto reqs = plan_prefetches(in);
    ASSERT_EQ(reqs.size(), 2u);
    EXPECT_EQ(reqs[0].layer, 2);
    EXPECT_EQ(reqs[0].expert, 1);
    EXPECT_DOUBLE_EQ(reqs[0].start_ms, 0.4);
    EXPECT_EQ(reqs[1].expert, 2);
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

}  // namespace
}  // namespace tandem

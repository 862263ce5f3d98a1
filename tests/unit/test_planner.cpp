// Planners: the paper's worked example, the brute-force optimum on small random instances, the
// baselines' rules, and the cost model read from a profile.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>

#include "kernels/error.h"
#include "scheduler/cost_model.h"
#include "scheduler/planner.h"
#include "tests/test_util.h"

namespace tandem {
namespace {

constexpr PlannerKind kAllPlanners[] = {PlannerKind::HybriMoe, PlannerKind::Static,
                                        PlannerKind::Fiddler, PlannerKind::GpuStream,
                                        PlannerKind::CpuOnly};

int count(const LayerPlan& p, ExpertPlacement where, const std::vector<int32_t>& tokens) {
    int n = 0;
    for (size_t e = 0; e < tokens.size(); ++e)
        n += tokens[e] > 0 && p.placement[e] == where;
    return n;
}

TEST(Planner, PaperWorkedDecodeExample) {
    // 6 activated experts, one token each, 3 of them resident; the published code's constants.
    const CostModel cost = CostModel::hybrimoe_published();
    const std::vector<int32_t> tokens = {1, 1, 1, 1, 1, 1, 0, 0};
    const std::vector<uint8_t> resident = {1, 0, 1, 0, 1, 0, 0, 1};
    const LayerPlan p =
        plan_layer(PlannerKind::HybriMoe, {.cost = cost, .tokens = tokens, .resident = resident});
    for (int e : {0, 2, 4})
        EXPECT_EQ(p.placement[size_t(e)], ExpertPlacement::Gpu) << "resident expert " << e;
    EXPECT_EQ(count(p, ExpertPlacement::Cpu, tokens), 1);
    EXPECT_EQ(count(p, ExpertPlacement::Transfer, tokens), 2);
    EXPECT_EQ(p.transfers.size(), 2u);
    EXPECT_EQ(p.cpu_jobs.size(), 1u);
    EXPECT_EQ(p.gpu_jobs.size(), 5u);
    EXPECT_NEAR(p.cpu_finish_ms, 1.79, 1e-9);
    EXPECT_NEAR(p.gpu_finish_ms, 2.5, 1e-9);  // 5 x 0.5, the copies land at 0.418 and 0.836
    EXPECT_NEAR(p.pcie_finish_ms, 0.836, 1e-9);
    // The static split would take 0.79 + 3 = 3.79 ms on the CPU.
    EXPECT_NEAR(
        plan_layer(PlannerKind::Static, {.cost = cost, .tokens = tokens, .resident = resident})
            .makespan_ms(),
        3.79, 1e-9);
}

double brute_force_ms(const PlanInput& in) {
    std::vector<size_t> active;
    for (size_t e = 0; e < in.tokens.size(); ++e)
        if (in.tokens[e] > 0) active.push_back(e);
    std::vector<ExpertPlacement> where(in.tokens.size(), ExpertPlacement::Cpu);
    LayerPlan plan;
    double best = 1e300;
    for (uint32_t mask = 0; mask < (1u << active.size()); ++mask) {
        for (size_t i = 0; i < active.size(); ++i) {
            const bool gpu = (mask >> i) & 1u;
            where[active[i]] = !gpu                     ? ExpertPlacement::Cpu
                               : in.resident[active[i]] ? ExpertPlacement::Gpu
                                                        : ExpertPlacement::Transfer;
        }
        schedule_assignment(in, where, plan);
        best = std::min(best, plan.makespan_ms());
    }
    return best;
}

TEST(Planner, HybrimoeNearBruteForceOptimumAndNeverWorseThanStaticOrCpuOnly) {
    TANDEM_SEEDED(seed);
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<double> u(0.0, 1.0);
    double ratio_sum = 0.0;
    const int n_instances = 300;
    for (int inst = 0; inst < n_instances; ++inst) {
        SCOPED_TRACE(::testing::Message() << "instance " << inst);
        // Costs spanning the regimes: CPU-bound decode, PCIe-bound, prefill with many tokens.
        const CostModel cost{.cpu_a_ms = 0.05 + u(rng),
                             .cpu_b_ms = 0.02 + u(rng),
                             .cpu_first_ms = u(rng),
                             .gpu_a_ms = 0.05 + 0.5 * u(rng),
                             .gpu_b_ms = 0.01 * u(rng),
                             .transfer_ms = 0.1 + 1.5 * u(rng)};
        const int n_experts = 4 + int(rng() % 7);  // 4..10
        const bool prefill = rng() % 2;
        std::vector<int32_t> tokens(size_t(n_experts), 0);
        std::vector<uint8_t> resident(size_t(n_experts), 0);
        for (int e = 0; e < n_experts; ++e) {
            if (u(rng) < 0.8) tokens[size_t(e)] = prefill ? 1 + int32_t(rng() % 40) : 1;
            resident[size_t(e)] = u(rng) < 0.4;
        }
        const PlanInput in{
            .cost = cost, .tokens = tokens, .resident = resident, .gpu_start_ms = 0.3 * u(rng)};
        const double best = brute_force_ms(in);
        const double got = plan_layer(PlannerKind::HybriMoe, in).makespan_ms();
        const double stat = plan_layer(PlannerKind::Static, in).makespan_ms();
        const double cpu = plan_layer(PlannerKind::CpuOnly, in).makespan_ms();
        EXPECT_GE(got, best - 1e-9);
        EXPECT_LE(got, stat + 1e-9);
        EXPECT_LE(got, cpu + 1e-9);
        ratio_sum += best > 0 ? got / best : 1.0;
    }
    const double mean_ratio = ratio_sum / n_instances;
    RecordProperty("mean_ratio_to_optimum", std::to_string(mean_ratio));
    EXPECT_LE(mean_ratio, 1.10);
}

TEST(Planner, BaselinesFollowTheirRules) {
    const CostModel cost = CostModel::hybrimoe_published();
    const std::vector<int32_t> tokens = {1, 30, 2, 0, 5};
    const std::vector<uint8_t> resident = {1, 0, 0, 0, 1};
    const PlanInput in{.cost = cost, .tokens = tokens, .resident = resident};
    const LayerPlan stat = plan_layer(PlannerKind::Static, in);
    EXPECT_EQ(stat.placement[0], ExpertPlacement::Gpu);
    EXPECT_EQ(stat.placement[1], ExpertPlacement::Cpu);
    EXPECT_TRUE(stat.transfers.empty());
    const LayerPlan stream = plan_layer(PlannerKind::GpuStream, in);
    EXPECT_EQ(stream.placement[1], ExpertPlacement::Transfer);
    EXPECT_EQ(stream.placement[2], ExpertPlacement::Transfer);
    EXPECT_TRUE(stream.cpu_jobs.empty());
    // Highest load copied first.
    ASSERT_EQ(stream.transfers.size(), 2u);
    EXPECT_EQ(stream.transfers[0].expert, 1);
    const LayerPlan fid = plan_layer(PlannerKind::Fiddler, in);
    EXPECT_EQ(fid.placement[1], ExpertPlacement::Transfer);  // 30 ms on the CPU vs 0.918
    EXPECT_EQ(fid.placement[2], ExpertPlacement::Transfer);  // 2 ms vs 0.918
    const LayerPlan cpu = plan_layer(PlannerKind::CpuOnly, in);
    EXPECT_EQ(cpu.cpu_jobs.size(), 4u);
    EXPECT_NEAR(cpu.makespan_ms(), 0.79 + 38.0, 1e-9);
    // The CPU runs misses before residents, each lowest load first.
    std::vector<int32_t> order;
    for (const auto& j : cpu.cpu_jobs)
        order.push_back(j.expert);
    EXPECT_EQ(order, (std::vector<int32_t>{2, 1, 0, 4}));
}

TEST(Planner, GpuWaitsForInFlightCopiesAndSharedExperts) {
    const CostModel cost{.cpu_a_ms = 10, .gpu_a_ms = 1.0, .transfer_ms = 2.0};
    const std::vector<int32_t> tokens = {1, 1};
    const std::vector<uint8_t> resident = {1, 1};
    const std::vector<double> ready = {0.0, 5.0};
    const LayerPlan p = plan_layer(PlannerKind::Static, {.cost = cost,
                                                         .tokens = tokens,
                                                         .resident = resident,
                                                         .ready_ms = ready,
                                                         .gpu_start_ms = 0.5});
    ASSERT_EQ(p.gpu_jobs.size(), 2u);
    EXPECT_EQ(p.gpu_jobs[0].expert, 0);
    EXPECT_DOUBLE_EQ(p.gpu_jobs[0].start_ms, 0.5);
    EXPECT_DOUBLE_EQ(p.gpu_jobs[1].start_ms, 5.0);
    EXPECT_DOUBLE_EQ(p.makespan_ms(), 6.0);
}

TEST(Planner, EveryPlannerPlacesEachActiveExpertOnceAndNamesRoundTrip) {
    TANDEM_SEEDED(seed);
    std::mt19937_64 rng(seed);
    const CostModel cost = CostModel::hybrimoe_published();
    std::vector<int32_t> tokens(64);
    std::vector<uint8_t> resident(64);
    for (size_t e = 0; e < 64; ++e) {
        tokens[e] = int32_t(rng() % 4);
        resident[e] = rng() % 2;
    }
    for (PlannerKind k : kAllPlanners) {
        EXPECT_EQ(parse_planner(planner_name(k)), k);
        const LayerPlan p = plan_layer(k, {.cost = cost, .tokens = tokens, .resident = resident});
        std::vector<int> seen(64, 0);
        for (const auto& j : p.cpu_jobs)
            ++seen[size_t(j.expert)];
        for (const auto& j : p.gpu_jobs)
            ++seen[size_t(j.expert)];
        for (size_t e = 0; e < 64; ++e)
            EXPECT_EQ(seen[e], tokens[e] > 0 ? 1 : 0) << planner_name(k) << " expert " << e;
    }
    EXPECT_THROW(parse_planner("greedy"), Error);
    EXPECT_THROW(
        plan_layer(PlannerKind::Static,
                   {.cost = cost, .tokens = tokens, .resident = std::span(resident).first(3)}),
        Error);
}

TEST(CostModel, FromProfileAndShape) {
    const HardwareProfile hw = parse_hardware_profile(R"({
        "name": "t", "cpu_bandwidth_gbs": 10, "cpu_gflops": 100, "cpu_expert_overhead_ms": 0.1,
        "cpu_first_expert_ms": 0.5, "gpu_bandwidth_gbs": 1000, "gpu_tflops": 100,
        "gpu_expert_overhead_ms": 0.01, "pcie_bandwidth_gbs": 20, "pcie_latency_ms": 0.02,
        "gpu_expert_memory_gb": 8})",
                                                      "t.json");
    const ModelShape shape{.name = "m",
                           .n_moe_layers = 2,
                           .n_experts = 8,
                           .n_experts_active = 2,
                           .hidden_dim = 1000,
                           .expert_ffn_dim = 500,
                           .bits_per_weight = 16};
    EXPECT_EQ(shape.expert_bytes(), 3'000'000);
    const CostModel c = CostModel::from_profile(hw, shape);
    EXPECT_NEAR(c.cpu_a_ms, 0.3 + 0.1, 1e-12);       // 3 MB at 10 GB/s + overhead
    EXPECT_NEAR(c.cpu_b_ms, 3e6 / 100e6, 1e-12);     // 2 x 1.5M FLOP at 100 GFLOP/s
    EXPECT_NEAR(c.transfer_ms, 0.15 + 0.02, 1e-12);  // 3 MB at 20 GB/s + latency
    EXPECT_NEAR(c.gpu_a_ms, 0.003 + 0.01, 1e-12);
    EXPECT_DOUBLE_EQ(c.shared_ms(4), 0.0);
    try {
        parse_hardware_profile(R"({"name": "x", "cpu_bandwidth_gbs": -1})", "bad.json");
        FAIL() << "expected an error";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("bad.json"), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find("cpu_bandwidth_gbs"), std::string::npos) << e.what();
    }
}

}  // namespace
}  // namespace tandem

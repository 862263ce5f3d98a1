// Planning one MoE layer: the per-layer planners on 128 experts (Qwen3-30B-A3B / gpt-oss-120b
// width), in decode (8 active experts, one token each) and prefill (every expert active, skewed
// loads), half of the experts resident. The bound: under 20 microseconds per layer.
#include <benchmark/benchmark.h>

#include <random>

#include "scheduler/planner.h"

namespace {

using namespace tandem;

void plan(benchmark::State& state, PlannerKind kind, bool prefill) {
    std::mt19937_64 rng(7);
    const int n_experts = 128;
    std::vector<int32_t> tokens(n_experts, 0);
    std::vector<uint8_t> resident(n_experts, 0);
    for (int e = 0; e < n_experts; ++e)
        resident[size_t(e)] = rng() % 2;
    if (prefill) {
        for (int e = 0; e < n_experts; ++e)
            tokens[size_t(e)] = 1 + int32_t(rng() % 64) * int32_t(rng() % 4);
    } else {
        for (int i = 0; i < 8; ++i)
            tokens[size_t(rng() % n_experts)] = 1;
    }
    const CostModel cost = CostModel::hybrimoe_published();
    LayerPlan out;
    for (auto _ : state) {
        plan_layer(kind, {.cost = cost, .tokens = tokens, .resident = resident}, out);
        benchmark::DoNotOptimize(out.cpu_finish_ms);
    }
}

BENCHMARK_CAPTURE(plan, hybrimoe_decode_128, PlannerKind::HybriMoe, false);
BENCHMARK_CAPTURE(plan, hybrimoe_prefill_128, PlannerKind::HybriMoe, true);
BENCHMARK_CAPTURE(plan, static_prefill_128, PlannerKind::Static, true);
BENCHMARK_CAPTURE(plan, fiddler_prefill_128, PlannerKind::Fiddler, true);
BENCHMARK_CAPTURE(plan, gpu_stream_prefill_128, PlannerKind::GpuStream, true);

}  // namespace

BENCHMARK_MAIN();

// Per-layer CPU/GPU planners: pure functions from (tokens per expert, residency, cost model) to a
// LayerPlan (which experts the CPU computes, which the GPU computes, which are copied over PCIe
// first, in what order, and when each timeline is predicted to finish).
//
//   hybrimoe    HybriMoE's three timelines (CPU, GPU, PCIe) and priority rules, with real token
//               counts in prefill and decode, searched rather than followed greedily: the GPU
//               computes resident experts, highest load first (an in-flight copy when it lands);
//               the CPU computes non-resident experts, lowest load first, and may take the
//               cheapest resident ones while misses are pending (when the copy engine serves
//               them better); the copy engine moves non-resident experts, highest load first,
//               from pcie_free_ms on, overlapping the GPU's resident work. Which side each
//               expert goes to is chosen by makespan. Experts with equal load, residency and
//               arrival are interchangeable, so a split is a count per such group; when there
//               are at most 256 splits (every decode step: one token per expert; up to 8
//               experts always) every split is scheduled and the best kept, the optimum of
//               these timelines. Above that, the paper's greedy and the baselines are starts of
//               a local search (move one or two experts across; up to 16 activated experts, a
//               prefill of a wide model keeps the best start, the search costing milliseconds)
//               and the best is kept, never worse than any baseline. Measured against brute force
//               (tests/unit/test_planner.cpp): 2-8 experts exact; 9-12 experts with distinct
//               loads >= 99 % of cases within 1 %, the worst 14 % above.
//   static      kTransformers: the GPU computes what is resident, the CPU the rest, no copies.
//   fiddler     per expert, the cheaper of cpu(n) and (resident ? gpu(n) : copy + gpu(n)).
//   gpu-stream  every miss is copied and computed on the GPU (Mixtral-offloading style).
//   cpu-only    everything on the CPU.
// Timeline semantics shared by all (schedule_assignment): the CPU pays its first-expert warm-up
// once and runs its jobs back to back, misses before residents, lowest load first; the copy
// engine starts at pcie_free_ms and copies highest load first; the GPU starts at gpu_start_ms
// (shared experts, or whatever the device does before this layer's routed experts) and always
// runs the highest-load job whose weights are there. The layer ends at max(CPU finish, GPU
// finish). A Gpu placement of an expert that is neither resident nor copied is refused (throws):
// it would compute without weights.
// Non-goals: executing anything, owning residency (cache/), knowing about threads or streams.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

#include "scheduler/cost_model.h"
#include "scheduler/routing.h"

namespace tandem {

enum class PlannerKind : uint8_t { HybriMoe, Static, Fiddler, GpuStream, CpuOnly };

// "hybrimoe", "static", "fiddler", "gpu-stream", "cpu-only"; throws listing them otherwise.
PlannerKind parse_planner(std::string_view name);
std::string_view planner_name(PlannerKind kind);

struct PlanInput {
    const CostModel& cost;
    std::span<const int32_t> tokens = {};  // [n_experts] tokens routed to each expert this step
    std::span<const uint8_t> resident =
        {};  // [n_experts] 1: weights on the GPU or already in flight
    std::span<const double> ready_ms = {};  // [n_experts] or empty: when an in-flight copy lands
    double gpu_start_ms = 0;                // GPU busy before routed experts (shared experts)
    double pcie_free_ms = 0;                // copy engine busy until (earlier prefetches)
};

// Plans into `out`, reusing its storage (planning is on the per-layer critical path).
void plan_layer(PlannerKind kind, const PlanInput& input, LayerPlan& out);
LayerPlan plan_layer(PlannerKind kind, const PlanInput& input);

// The timelines of a given assignment (placement per expert), by the semantics above. Every
// planner ends here; tests use it to brute-force the optimum.
void schedule_assignment(const PlanInput& input, std::span<const ExpertPlacement> placement,
                         LayerPlan& out);

}  // namespace tandem

// Routing of one MoE layer for one step, and its regrouping by expert.
//
// The router produces, per token, the n_experts_active chosen experts and their weights
// (token-major). Expert kernels want the transpose: per expert, the tokens it must process, so
// that each expert's weights are read once for all its tokens. ExpertGroups is that transpose
// in CSR form, which is also the input of the per-layer planner (tokens per expert decide
// whether an expert runs on the CPU or the GPU).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace tandem {

struct Routing {
    int64_t n_tokens = 0;
    int64_t n_experts_active = 0;  // top-k
    std::vector<int32_t> experts;  // [n_tokens, n_experts_active]
    std::vector<float> weights;    // [n_tokens, n_experts_active]
};

struct ExpertGroups {
    std::vector<int32_t> offsets;      // [n_experts + 1]
    std::vector<int32_t> token_index;  // [n_tokens * n_experts_active], grouped by expert
    std::vector<float> token_weight;   // same order as token_index

    int64_t tokens_of(int64_t expert) const {
        return offsets[size_t(expert + 1)] - offsets[size_t(expert)];
    }
};

// Groups routed slots by expert; within an expert, tokens keep their order. Throws on an
// expert id outside [0, n_experts).
ExpertGroups group_by_expert(const Routing& routing, int64_t n_experts);

// Where each routed expert of a layer runs this step. Transfer: copied to the GPU over PCIe
// during the layer, then computed there. Experts without tokens keep Cpu and have no job.
enum class ExpertPlacement : uint8_t { Cpu, Gpu, Transfer };

// One expert's work on one timeline, times in ms from the start of the layer.
struct PlannedJob {
    int32_t expert = 0;
    int32_t tokens = 0;
    double start_ms = 0;
    double finish_ms = 0;
};

// A planner's answer for one layer (scheduler/planner.h): the placement per expert, the jobs of
// each timeline in execution order, and the predicted finish times.
struct LayerPlan {
    std::vector<ExpertPlacement> placement;  // [n_experts]
    std::vector<PlannedJob> cpu_jobs;
    std::vector<PlannedJob> gpu_jobs;   // resident and transferred experts
    std::vector<PlannedJob> transfers;  // copy-engine jobs (demand transfers)
    double cpu_finish_ms = 0;
    double gpu_finish_ms = 0;
    double pcie_finish_ms = 0;

    double makespan_ms() const {
        return cpu_finish_ms > gpu_finish_ms ? cpu_finish_ms : gpu_finish_ms;
    }
};

// The CPU-only plan: every expert on the CPU. The baseline that hybrid planners are measured
// against, and the plan of a run without a GPU.
LayerPlan plan_cpu_only(int64_t n_experts);

}  // namespace tandem

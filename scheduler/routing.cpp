#include "scheduler/routing.h"

#include "kernels/error.h"

namespace tandem {

ExpertGroups group_by_expert(const Routing& routing, int64_t n_experts) {
    const size_t n_slots = size_t(routing.n_tokens * routing.n_experts_active);
    if (routing.experts.size() != n_slots || routing.weights.size() != n_slots)
        fail("routing: expected ", n_slots, " slots, got ", routing.experts.size(), " experts and ",
             routing.weights.size(), " weights");
    ExpertGroups groups;
    groups.offsets.assign(size_t(n_experts + 1), 0);
    for (int32_t expert : routing.experts) {
        if (expert < 0 || expert >= n_experts)
            fail("routing: expert id ", expert, " outside [0, ", n_experts, ")");
        ++groups.offsets[size_t(expert + 1)];
    }
    for (int64_t e = 0; e < n_experts; ++e)
        groups.offsets[size_t(e + 1)] += groups.offsets[size_t(e)];
    groups.token_index.resize(n_slots);
    groups.token_weight.resize(n_slots);
    std::vector<int32_t> cursor(groups.offsets.begin(), groups.offsets.end() - 1);
    for (size_t slot = 0; slot < n_slots; ++slot) {
        const int32_t at = cursor[size_t(routing.experts[slot])]++;
        groups.token_index[size_t(at)] = int32_t(int64_t(slot) / routing.n_experts_active);
        groups.token_weight[size_t(at)] = routing.weights[slot];
    }
    return groups;
}

LayerPlan plan_cpu_only(int64_t n_experts) {
    LayerPlan plan;
    plan.placement.assign(size_t(n_experts), ExpertPlacement::Cpu);
    return plan;
}

}  // namespace tandem

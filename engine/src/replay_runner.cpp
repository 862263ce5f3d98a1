#include "engine/src/replay_runner.h"

#include "kernels/cpu/expert_ffn.h"
#include "models/config.h"
#include "models/decoder.h"

namespace tandem {

void CpuReplayRunner::bind(const ModelConfig& config, std::span<const MoeWeights* const>) {
    n_experts_ = config.n_experts;
}

bool CpuReplayRunner::replace_routing(int moe_layer, int64_t, Routing& routing) {
    routing = replay_.routing(moe_layer);
    return true;
}

void CpuReplayRunner::run(const MoeLayerCall& call, ThreadPool& pool) {
    const ExpertGroups groups = group_by_expert(*call.routing, n_experts_);
    cpu::moe_experts({.x = call.x,
                      .out = call.out,
                      .experts = call.weights->experts,
                      .offsets = groups.offsets,
                      .token_index = groups.token_index,
                      .token_weight = groups.token_weight},
                     pool);
}

}  // namespace tandem

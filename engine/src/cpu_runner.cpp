#include "engine/src/cpu_runner.h"

#include "models/config.h"
#include "models/decoder.h"

namespace tandem {

void CpuRunner::bind(const ModelConfig& config, std::span<const MoeWeights* const> moe_layers) {
    experts_.bind(moe_layers);
    n_experts_ = config.n_experts;
    glu_ = glu_options(config);
}

bool CpuRunner::replace_routing(int moe_layer, int64_t, Routing& routing) {
    if (replay_ == nullptr) return false;
    routing = replay_->routing(moe_layer);
    return true;
}

void CpuRunner::run(const MoeLayerCall& call, ThreadPool& pool) {
    const ExpertGroups groups = group_by_expert(*call.routing, n_experts_);
    experts_.run(call.moe_layer,
                 {.x = call.x,
                  .out = call.out,
                  .experts = call.weights->experts,
                  .offsets = groups.offsets,
                  .token_index = groups.token_index,
                  .token_weight = groups.token_weight,
                  .glu = glu_},
                 pool);
}

}  // namespace tandem

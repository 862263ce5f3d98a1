// The routed experts of an engine without an expert device, when the model's own path (the
// fused kernel on the engine's pool, models/blocks/moe_block.cpp) is not enough:
//   - under routing replay: the trace chooses each layer's experts and weights
//     (scheduler/routing_replay.h);
//   - with NUMA pools: the experts run as NUMA tensor parallelism (engine/src/cpu_experts.h).
// Either or both; the CPU computes every expert.
#pragma once

#include "engine/src/cpu_experts.h"
#include "models/expert_runner.h"
#include "scheduler/routing_replay.h"

namespace tandem {

class CpuRunner final : public ExpertRunner {
  public:
    // replay: nullptr keeps the routers' choice; numa: nullptr runs on the caller's pool.
    CpuRunner(RoutingReplay* replay, NumaPools* numa) : replay_(replay), experts_(numa) {}

    void bind(const ModelConfig& config, std::span<const MoeWeights* const> moe_layers) override;
    void begin_step(int64_t n_tokens) override {
        if (replay_) replay_->begin_step(n_tokens);
    }
    bool replace_routing(int moe_layer, int64_t n_tokens, Routing& routing) override;
    void run(const MoeLayerCall& call, ThreadPool& pool) override;
    void end_step() override {
        if (replay_ && replay_->step_rows() > 0) replay_->end_step();
    }

  private:
    RoutingReplay* replay_;
    CpuExperts experts_;
    int64_t n_experts_ = 0;
    cpu::GluOptions glu_;  // the model's activation (gpt-oss's clamped one)
};

}  // namespace tandem

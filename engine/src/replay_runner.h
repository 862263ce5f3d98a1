// The routed experts of an engine without an expert device under routing replay: the trace
// chooses each layer's experts and weights (scheduler/routing_replay.h), the CPU pool computes
// them with the fused kernel, as the model would with its own routing.
#pragma once

#include "models/expert_runner.h"
#include "scheduler/routing_replay.h"

namespace tandem {

class CpuReplayRunner final : public ExpertRunner {
  public:
    explicit CpuReplayRunner(RoutingReplay& replay) : replay_(replay) {}

    void bind(const ModelConfig& config, std::span<const MoeWeights* const> moe_layers) override;
    void begin_step(int64_t n_tokens) override { replay_.begin_step(n_tokens); }
    bool replace_routing(int moe_layer, int64_t n_tokens, Routing& routing) override;
    void run(const MoeLayerCall& call, ThreadPool& pool) override;
    void end_step() override {
        if (replay_.step_rows() > 0) replay_.end_step();
    }

  private:
    RoutingReplay& replay_;
    int64_t n_experts_ = 0;
};

}  // namespace tandem

// The routed experts of a decode step captured in a CUDA graph when a hybrid expert runner places
// them (the device decoder with DeviceModelOptions.routed_experts_on_host and --cuda-graphs): per
// MoE layer, the page-locked tables that the step and the runner's host functions exchange
// (models/expert_runner.h, GraphLayerIo), their device mirror, and the work that a capture
// records — the rows down, the plan (a host function), the tables up, the demand copies (a gather
// kernel reading the list), the device's experts (one grouped kernel over a writable expert
// table), the prefetches on a branch joined before the next layer's copies, the CPU's sum (a
// host function) up and added. The graph stays the same while the plan changes every step.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "kernels/buffer.h"
#include "kernels/cuda/context.h"
#include "kernels/cuda/graph.h"
#include "kernels/cuda/moe_experts.h"
#include "kernels/tensor.h"
#include "models/decoder.h"
#include "models/expert_runner.h"

namespace tandem {

class HybridDecodeGraph {
  public:
    // Whether a step of n_tokens over these MoE layers (host weights) can be captured: the
    // grouped kernels take their experts (device_decoder checks the rest of a decode step).
    static bool supported(const ModelConfig& config, std::span<const MoeWeights* const> layers,
                          int64_t n_tokens);

    // Tables for steps of n_tokens: page-locked and device memory for every MoE layer.
    HybridDecodeGraph(Device device, ExpertRunner& runner, const ModelConfig& config,
                      std::span<const MoeWeights* const> layers, int64_t n_tokens);
    HybridDecodeGraph(const HybridDecodeGraph&) = delete;
    HybridDecodeGraph& operator=(const HybridDecodeGraph&) = delete;
    ~HybridDecodeGraph();

    // Records (captured) or queues (eager) MoE layer moe_layer's routed experts on ctx's stream:
    // out ([n_tokens, hidden_dim] f32 on the device, zeroed) += their weighted sum; x the layer's
    // normed rows on the device.
    void record(cuda::Context& ctx, cuda::Branch& branch, int moe_layer, const Tensor& x,
                const Tensor& out);
    // Joins the last layer's prefetch branch: the end of every step's work.
    void finish(cuda::Context& ctx, cuda::Branch& branch);

  private:
    struct Layer;
    std::vector<std::unique_ptr<Layer>> layers_;
    int64_t n_tokens_ = 0, hidden_ = 0, k_ = 0;
    bool branch_open_ = false;
};

}  // namespace tandem

// CpuExperts: how the CPU computes a MoE layer's routed experts for the engine's expert runners
// (CpuRunner, HybridExecutor). Without NUMA pools: the fused kernel cpu::moe_experts on the
// caller's pool, straight from the model's weights (no copies). With them: NUMA tensor
// parallelism (kernels/cpu/numa_experts.h) over per-node copies of every expert's ffn slice,
// made at bind(), i.e. when the model is first bound, after load-time quantization and after a
// weight reload.
#pragma once

#include <span>
#include <vector>

#include "kernels/cpu/numa_experts.h"
#include "kernels/numa_pools.h"
#include "models/decoder.h"

namespace tandem {

class CpuExperts {
  public:
    explicit CpuExperts(NumaPools* numa = nullptr) : numa_(numa) {}

    // The MoE layers' weights in model order; with NUMA pools, copies their slices (after
    // freeing the previous copies; if it throws, nothing is bound).
    void bind(std::span<const MoeWeights* const> moe_layers);

    // moe_experts(args) for MoE layer `moe_layer`, whose weights args.experts must be; `pool` is
    // used only without NUMA pools.
    void run(int moe_layer, const cpu::MoeExpertsArgs& args, ThreadPool& pool);

    bool numa() const { return numa_ != nullptr; }
    size_t copied_bytes() const;  // the per-node copies, over all layers
    // The fused kernel's temporaries: grown before a call larger than any before, so the steady
    // state allocates nothing. One call at a time (runs on one thread: the model's or the
    // hybrid executor's CPU worker).
    const ScratchArena& scratch() const { return arena_; }

  private:
    NumaPools* numa_ = nullptr;
    std::vector<cpu::NumaExpertSlices> layers_;  // [n_moe_layers] with NUMA pools
    cpu::NumaMoeScratch scratch_;
    ScratchArena arena_;
};

}  // namespace tandem

// From EngineConfig's hybrid, replay and NUMA fields to the model's ExpertRunner: names parsed
// (errors name the field), the routing trace read and checked against the model, the cost model
// loaded from a hardware profile or calibrated on this machine (cached, see
// calibration_cache.h), the NUMA pools made when the topology has several nodes.
#pragma once

#include <memory>

#include <tandem/engine.h>

#include "engine/src/hybrid_executor.h"
#include "kernels/numa_pools.h"
#include "scheduler/routing_replay.h"

namespace tandem {

struct ExpertRunners {
    std::unique_ptr<NumaPools> numa;           // with EngineConfig.numa; outlives the runners
    std::unique_ptr<RoutingReplay> replay;     // with EngineConfig.replay_routing
    std::unique_ptr<HybridExecutor> executor;  // with EngineConfig.expert_device
    std::unique_ptr<ExpertRunner> cpu;         // replay or NUMA without a device

    // What the model runs its experts on; nullptr: its own routers and the CPU.
    ExpertRunner* runner() const {
        return executor ? static_cast<ExpertRunner*>(executor.get()) : cpu.get();
    }
};

// The NUMA pools EngineConfig.numa asks for: "off" none, "auto" when the topology (this machine,
// or EngineConfig.numa_topology) has more than one NUMA node with cores, "distribute" always;
// none for a model without routed experts.
std::unique_ptr<NumaPools> make_numa_pools(const EngineConfig& config, const ModelConfig& model);

// Builds the runners and binds the model to runner() (model.set_expert_runner).
ExpertRunners make_expert_runners(const EngineConfig& config, Model& model, ThreadPool& pool);

// The counters of `executor` in `stats`.
void add_hybrid_stats(const HybridExecutor& executor, EngineStats& stats);

}  // namespace tandem

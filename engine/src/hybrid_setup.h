// From EngineConfig's hybrid fields to a HybridExecutor attached to the model: names parsed
// (errors name the field), the cost model loaded from a hardware profile or calibrated on this
// machine (cached, see calibration_cache.h).
#pragma once

#include <memory>

#include <tandem/engine.h>

#include "engine/src/hybrid_executor.h"

namespace tandem {

// nullptr when config.expert_device is empty (every expert on the CPU). Otherwise the executor,
// already bound to `model` (model.set_expert_runner) and calibrated.
std::unique_ptr<HybridExecutor> make_hybrid_executor(const EngineConfig& config, Model& model,
                                                     ThreadPool& pool);

// The counters of `executor` in `stats`.
void add_hybrid_stats(const HybridExecutor& executor, EngineStats& stats);

}  // namespace tandem

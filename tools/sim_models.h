// Built-in model shapes for tandem-sim, from ../shared/reference/models.md (config.json values).
// Dense parameters per layer approximate attention + router (the GPU's share of a layer); the
// expert weights' bits per weight are set by the caller (--bits), the rest is taken as bf16.
#pragma once

#include <string>
#include <vector>

#include "scheduler/cost_model.h"

namespace tandem::sim {

// "olmoe-1b-7b", "deepseek-v2-lite", "gpt-oss-120b", "qwen3-30b-a3b", "mixtral-8x7b",
// "tandem-demo-moe" (the repo's demo model, for its recorded trace).
ModelShape model_preset(const std::string& name, double bits_per_weight);
std::vector<std::string> model_preset_names();

}  // namespace tandem::sim

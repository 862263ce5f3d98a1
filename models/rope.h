// Rotary frequencies θ_i of a model, from rope_theta and rope_scaling as Hugging Face computes
// them (including Llama 3.1's frequency-dependent scaling).
#pragma once

#include <vector>

#include "models/config.h"

namespace tandem {

// [rotary_dim / 2] inverse frequencies; computed in float32 like transformers, held as double.
std::vector<double> rope_inv_freq(const ModelConfig& config);

}  // namespace tandem

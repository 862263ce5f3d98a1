// Rotary frequencies θ_i of a model, from rope_theta and rope_scaling as Hugging Face computes
// them (including Llama 3.1's frequency-dependent scaling and YaRN), and YaRN's attention
// factors.
#pragma once

#include <vector>

#include "models/config.h"

namespace tandem {

// [rotary_dim / 2] inverse frequencies; computed in float32 like transformers, held as double.
std::vector<double> rope_inv_freq(const ModelConfig& config);

// The factor that multiplies cos and sin (YaRN's attention factor; 1 for other rope types).
double rope_attention_factor(const RopeConfig& rope);

// DeepSeek's extra softmax scale: mscale(factor, mscale_all_dim)^2 whenever the rope type is not
// default and mscale_all_dim is set (transformers' yarn_apply_mscale), else 1.
double deepseek_softmax_mscale(const RopeConfig& rope);

}  // namespace tandem

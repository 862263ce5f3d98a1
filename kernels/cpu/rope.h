// Rotary position embedding in the "rotate half" layout of Hugging Face Llama-family models:
// dimension i of a head is paired with i + rotary_dim/2, and
//   out[i]          = x[i] cos(p θ_i) - x[i + half] sin(p θ_i)
//   out[i + half]   = x[i + half] cos(p θ_i) + x[i] sin(p θ_i)
// θ_i (inv_freq) comes from the model's config (rope_theta, rope_scaling); see models/rope.h.
// Dimensions past rotary_dim (partial rotary) are left as they are.
#pragma once

#include <span>

#include "kernels/tensor.h"

namespace tandem::cpu {

// x: [n_tokens, n_heads, head_dim] f32, rotated in place; positions: [n_tokens];
// inv_freq: [rotary_dim / 2]; attention_scale multiplies cos and sin (1 except for YaRN).
void apply_rope(const Tensor& x, std::span<const int64_t> positions,
                std::span<const double> inv_freq, double attention_scale = 1.0);

}  // namespace tandem::cpu

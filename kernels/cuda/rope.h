// Rotary position embedding on a CUDA device, the rotate-half layout of kernels/cpu/rope.h:
// dimension i of a head pairs with i + rotary_dim / 2; dimensions past rotary_dim (partial
// rotary) are left as they are. inv_freq (plain, Llama 3 or YaRN, from models/rope.h) gives
// rotary_dim = 2 x inv_freq.size(). Angles are computed in double and rounded once, as on the CPU
// (rope_math.h). Launches on ctx's stream; positions and inv_freq are uploaded from the host.
#pragma once

#include <cstdint>
#include <span>

#include "kernels/cuda/context.h"
#include "kernels/tensor.h"

namespace tandem::cuda {

// x: [n_tokens, n_heads, head_dim] f32 device tensor, rotated in place; positions: [n_tokens];
// inv_freq: [rotary_dim / 2]; attention_scale multiplies cos and sin (1 except for YaRN).
void apply_rope(Context& ctx, const Tensor& x, std::span<const int64_t> positions,
                std::span<const double> inv_freq, double attention_scale = 1.0);

// The same with positions [n_tokens] and inv_freq [half] already in device memory: one launch,
// nothing uploaded, so it may be captured in a CUDA graph (the positions may change between
// replays).
void apply_rope(Context& ctx, const Tensor& x, const int64_t* device_positions,
                const double* device_inv_freq, int64_t half, double attention_scale = 1.0);

}  // namespace tandem::cuda

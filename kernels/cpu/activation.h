// Elementwise activations of feed-forward blocks.
#pragma once

#include "kernels/tensor.h"

namespace tandem::cpu {

// out = silu(gate) * up, SwiGLU's gating; all [n_tokens, ffn_dim] f32, out may alias gate.
void silu_mul(const Tensor& gate, const Tensor& up, const Tensor& out);

inline float silu(float x) {
    return x / (1.0f + __builtin_expf(-x));
}
inline float sigmoid(float x) {
    return 1.0f / (1.0f + __builtin_expf(-x));
}

}  // namespace tandem::cpu

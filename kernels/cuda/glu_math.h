// The routed experts' gated activation on the GPU, the arithmetic of cpu::GluOptions
// (kernels/cpu/expert_ffn.h): SwiGLU's silu(gate) * up, or with a limit (gpt-oss) the clamped
// variant g = min(gate, limit), u = clamp(up, -limit, limit), (u + 1) * g * sigmoid(alpha * g).
// TANDEM_HD, so the CPU twin test (tests/unit/test_cuda_math_twins.cpp) checks it against the CPU
// kernel's on every CI run.
#pragma once
#include <math.h>

#include "kernels/cuda/host_device.h"

namespace tandem::cuda {

TANDEM_HD float gated_activation(float gate, float up, float limit, float alpha) {
    if (limit <= 0.0f) return gate / (1.0f + expf(-gate)) * up;
    gate = fminf(gate, limit);
    up = fminf(fmaxf(up, -limit), limit);
    return (up + 1.0f) * (gate / (1.0f + expf(-alpha * gate)));
}

}  // namespace tandem::cuda

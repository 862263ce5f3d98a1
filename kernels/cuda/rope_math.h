// The RoPE arithmetic of kernels/cuda/rope.cu, shared with the CPU twin test: the angle
// position x θ_i in double, its cos and sin (times the attention factor) rounded once to float,
// as kernels/cpu/rope.cpp computes them (positions up to 128k keep ~1e-7), then the rotation of
// one (x[i], x[i + half]) pair with separately rounded products (no fused multiply-add), so the
// GPU gives the CPU's bits whenever the device's double cos/sin round to the same floats.
#pragma once

#include <cmath>
#include <cstdint>

#include "kernels/cuda/host_device.h"

namespace tandem::cuda {

struct RopeAngle {
    float cos, sin;
};

TANDEM_HD RopeAngle rope_angle(int64_t position, double inv_freq, double attention_scale) {
    const double angle = double(position) * inv_freq;
    return {float(cos(angle) * attention_scale), float(sin(angle) * attention_scale)};
}

// a * b rounded to float on its own: nvcc would otherwise fuse a * b - c * d into an FMA.
TANDEM_HD float mul_rounded(float a, float b) {
#ifdef __CUDA_ARCH__
    return __fmul_rn(a, b);
#else
    return a * b;
#endif
}

// The rotate-half pair (x[i], x[i + half]) rotated by the angle, in place.
TANDEM_HD void rope_rotate(float& first, float& second, RopeAngle r) {
    const float a = first, b = second;
    first = mul_rounded(a, r.cos) - mul_rounded(b, r.sin);
    second = mul_rounded(b, r.cos) + mul_rounded(a, r.sin);
}

}  // namespace tandem::cuda

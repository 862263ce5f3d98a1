// Arithmetic shared by the CUDA kernels and the CPU. A function marked TANDEM_HD compiles as
// __host__ __device__ under nvcc and as a plain inline function under g++, so the CPU twin tests
// (tests/unit/test_cuda_*_twins.cpp) check on every CI run the very code the kernels execute:
// block dequantization, the dot order inside a block, softmax/top-k, RoPE angles.
//
// C++20 without the standard library's constexpr-only helpers (std::bit_cast is host-only under
// nvcc); no CUDA headers needed, so host code includes this freely.
#pragma once
#include <cstdint>
#include <cstring>

#ifdef __CUDACC__
#define TANDEM_HD __host__ __device__ __forceinline__
#else
#define TANDEM_HD inline
#endif

namespace tandem::cuda {

TANDEM_HD float bits_to_f32(uint32_t bits) {
#ifdef __CUDA_ARCH__
    return __uint_as_float(bits);
#else
    float value;
    std::memcpy(&value, &bits, sizeof value);
    return value;
#endif
}

TANDEM_HD uint32_t f32_to_bits(float value) {
#ifdef __CUDA_ARCH__
    return __float_as_uint(value);
#else
    uint32_t bits;
    std::memcpy(&bits, &value, sizeof bits);
    return bits;
#endif
}

TANDEM_HD float bf16_bits_to_f32(uint16_t bits) {
    return bits_to_f32(uint32_t(bits) << 16);
}

// Round to nearest even, NaN kept a (quiet) NaN: the same bits as tandem::f32_to_bf16.
TANDEM_HD uint16_t f32_to_bf16_bits(float value) {
    uint32_t bits = f32_to_bits(value);
    if ((bits & 0x7fffffffu) > 0x7f800000u) return uint16_t((bits >> 16) | 0x40);
    bits += 0x7fffu + ((bits >> 16) & 1u);
    return uint16_t(bits >> 16);
}

// IEEE half to float, exact for every input (subnormals, infinities, NaN): the same values as
// tandem::f16_to_f32. Written out rather than through cuda_fp16.h so that g++ compiles it too.
TANDEM_HD float f16_bits_to_f32(uint16_t h) {
    const uint32_t sign = uint32_t(h & 0x8000u) << 16;
    const uint32_t exponent = (h >> 10) & 0x1fu;
    const uint32_t mantissa = h & 0x3ffu;
    if (exponent == 0x1f) return bits_to_f32(sign | 0x7f800000u | (mantissa << 13));
    if (exponent != 0) return bits_to_f32(sign | ((exponent + 112) << 23) | (mantissa << 13));
    // Zero or subnormal: mantissa x 2^-24, exact in f32.
    const float magnitude = float(mantissa) * 5.9604644775390625e-8f;
    return sign ? -magnitude : magnitude;
}

}  // namespace tandem::cuda

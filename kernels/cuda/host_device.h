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
// On the GPU one cvt instruction, exact for every non-NaN half as well (a NaN stays a NaN, its
// payload unspecified): the written-out branches cost a dozen instructions per scale in the
// quantized GEMV's inner loop.
TANDEM_HD float f16_bits_to_f32(uint16_t h) {
#ifdef __CUDA_ARCH__
    float value;
    asm("cvt.f32.f16 %0, %1;" : "=f"(value) : "h"(h));
    return value;
#endif
    const uint32_t sign = uint32_t(h & 0x8000u) << 16;
    const uint32_t exponent = (h >> 10) & 0x1fu;
    const uint32_t mantissa = h & 0x3ffu;
    if (exponent == 0x1f) return bits_to_f32(sign | 0x7f800000u | (mantissa << 13));
    if (exponent != 0) return bits_to_f32(sign | ((exponent + 112) << 23) | (mantissa << 13));
    // Zero or subnormal: mantissa x 2^-24, exact in f32.
    const float magnitude = float(mantissa) * 5.9604644775390625e-8f;
    return sign ? -magnitude : magnitude;
}

// Round to nearest even, overflow to infinity, NaN a quiet NaN: the same bits as
// tandem::f32_to_f16 (and the F16C conversion write_rows uses, for every non-NaN input).
TANDEM_HD uint16_t f32_to_f16_bits(float value) {
    const uint32_t bits = f32_to_bits(value);
    const uint16_t sign = uint16_t((bits >> 16) & 0x8000u);
    const uint32_t magnitude = bits & 0x7fffffffu;
    if (magnitude > 0x7f800000u) return sign | 0x7e00u;
    if (magnitude >= 0x47800000u) return sign | 0x7c00u;
    if (magnitude < 0x38800000u) {
        // A subnormal half or zero: shift the mantissa with its implicit one, round to even.
        if (magnitude < 0x33000000u) return sign;
        const uint32_t mantissa = (magnitude & 0x7fffffu) | 0x800000u;
        const uint32_t shift = 126 - (magnitude >> 23);  // 14..24
        uint32_t half = mantissa >> shift;
        const uint32_t rest = mantissa & ((1u << shift) - 1);
        const uint32_t halfway = 1u << (shift - 1);
        if (rest > halfway || (rest == halfway && (half & 1u))) ++half;
        return uint16_t(sign | half);
    }
    // Normal: rebias the exponent and round the 13 dropped bits (a carry may reach infinity).
    uint32_t half = (magnitude >> 13) - (112u << 10);
    const uint32_t rest = magnitude & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (half & 1u))) ++half;
    return uint16_t(sign | half);
}

// Element i of an array of f32 (kind 0), f16 (1) or bf16 (2), as float: weights and KV rows are
// read in their stored type. FloatKind keeps device code free of tandem::DType's other members.
enum class FloatKind : int { F32 = 0, F16 = 1, BF16 = 2 };

TANDEM_HD float load_float(const void* data, FloatKind kind, int64_t i) {
    switch (kind) {
        case FloatKind::F16: return f16_bits_to_f32(static_cast<const uint16_t*>(data)[i]);
        case FloatKind::BF16: return bf16_bits_to_f32(static_cast<const uint16_t*>(data)[i]);
        default: return static_cast<const float*>(data)[i];
    }
}

TANDEM_HD void store_float(void* data, FloatKind kind, int64_t i, float value) {
    switch (kind) {
        case FloatKind::F16: static_cast<uint16_t*>(data)[i] = f32_to_f16_bits(value); break;
        case FloatKind::BF16: static_cast<uint16_t*>(data)[i] = f32_to_bf16_bits(value); break;
        default: static_cast<float*>(data)[i] = value;
    }
}

}  // namespace tandem::cuda

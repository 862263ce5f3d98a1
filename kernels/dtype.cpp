#include "kernels/dtype.h"

#include "kernels/error.h"

namespace tandem {

std::string_view dtype_name(DType dtype) {
    switch (dtype) {
        case DType::F32:
            return "f32";
        case DType::F16:
            return "f16";
        case DType::BF16:
            return "bf16";
        case DType::I32:
            return "i32";
        case DType::I64:
            return "i64";
    }
    return "?";
}

std::optional<DType> dtype_from_safetensors(std::string_view name) {
    if (name == "F32") return DType::F32;
    if (name == "F16") return DType::F16;
    if (name == "BF16") return DType::BF16;
    if (name == "I32") return DType::I32;
    if (name == "I64") return DType::I64;
    return std::nullopt;
}

std::string_view dtype_safetensors_name(DType dtype) {
    switch (dtype) {
        case DType::F32:
            return "F32";
        case DType::F16:
            return "F16";
        case DType::BF16:
            return "BF16";
        case DType::I32:
            return "I32";
        case DType::I64:
            return "I64";
    }
    return "?";
}

int64_t dtype_block_size(DType) {
    return 1;
}

int64_t dtype_block_bytes(DType dtype) {
    switch (dtype) {
        case DType::F32:
            return 4;
        case DType::F16:
            return 2;
        case DType::BF16:
            return 2;
        case DType::I32:
            return 4;
        case DType::I64:
            return 8;
    }
    return 0;
}

int64_t row_bytes(DType dtype, int64_t n) {
    const int64_t block = dtype_block_size(dtype);
    if (n % block != 0)
        fail("row of ", n, " elements is not a multiple of the ", dtype_name(dtype), " block size ",
             block);
    return n / block * dtype_block_bytes(dtype);
}

bool is_float_weight_type(DType dtype) {
    return dtype == DType::F32 || dtype == DType::F16 || dtype == DType::BF16;
}

float f16_to_f32(uint16_t h) {
    const uint32_t sign = uint32_t(h & 0x8000u) << 16;
    uint32_t exponent = (h >> 10) & 0x1fu;
    uint32_t mantissa = h & 0x3ffu;
    uint32_t bits;
    if (exponent == 0x1f) {
        bits = sign | 0x7f800000u | (mantissa << 13);  // inf or nan
    } else if (exponent != 0) {
        bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
    } else if (mantissa == 0) {
        bits = sign;
    } else {
        // Subnormal half: normalise into an f32 exponent.
        exponent = 113;
        while ((mantissa & 0x400u) == 0) {
            mantissa <<= 1;
            --exponent;
        }
        bits = sign | (exponent << 23) | ((mantissa & 0x3ffu) << 13);
    }
    return std::bit_cast<float>(bits);
}

uint16_t f32_to_f16(float value) {
    const uint32_t bits = std::bit_cast<uint32_t>(value);
    const uint16_t sign = uint16_t((bits >> 16) & 0x8000u);
    const uint32_t magnitude = bits & 0x7fffffffu;
    if (magnitude > 0x7f800000u) return sign | 0x7e00u;   // nan
    if (magnitude >= 0x47800000u) return sign | 0x7c00u;  // >= 65536 (rounds to inf)
    if (magnitude < 0x38800000u) {
        // Result is subnormal or zero: shift the implicit-one mantissa, round to nearest even.
        if (magnitude < 0x33000000u) return sign;  // below half the smallest subnormal
        const uint32_t exponent = magnitude >> 23;
        const uint32_t mantissa = (magnitude & 0x7fffffu) | 0x800000u;
        const uint32_t shift = 126 - exponent;  // 14..24
        uint32_t half = mantissa >> shift;
        const uint32_t rest = mantissa & ((1u << shift) - 1);
        const uint32_t halfway = 1u << (shift - 1);
        if (rest > halfway || (rest == halfway && (half & 1u))) ++half;
        return sign | uint16_t(half);
    }
    // Normal: rebias the exponent, round the 13 dropped mantissa bits to nearest even.
    uint32_t half = ((magnitude >> 13) - (112u << 10));
    const uint32_t rest = magnitude & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (half & 1u))) ++half;  // may carry into inf
    return sign | uint16_t(half);
}

}  // namespace tandem

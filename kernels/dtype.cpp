#include "kernels/dtype.h"

#include "kernels/error.h"

namespace tandem {

namespace {

struct DTypeInfo {
    DType dtype;
    std::string_view name;              // Tandem's name, as flags and messages write it
    std::string_view safetensors_name;  // empty: no safetensors equivalent
    int64_t block_size;                 // elements per block
    int64_t block_bytes;                // bytes per block
};

// One row per type: names, block size and bytes, in one place.
constexpr DTypeInfo kTypes[] = {
    {DType::F32, "f32", "F32", 1, 4},    {DType::F16, "f16", "F16", 1, 2},
    {DType::BF16, "bf16", "BF16", 1, 2}, {DType::I32, "i32", "I32", 1, 4},
    {DType::I64, "i64", "I64", 1, 8},    {DType::Q8_0, "q8_0", "", 32, 34},
    {DType::Q4_0, "q4_0", "", 32, 18},   {DType::Q4_K, "q4_k", "", 256, 144},
    {DType::Q5_K, "q5_k", "", 256, 176}, {DType::Q6_K, "q6_k", "", 256, 210},
    {DType::Q8_K, "q8_k", "", 256, 292}, {DType::Q5_0, "q5_0", "", 32, 22},
    {DType::MXFP4, "mxfp4", "", 32, 17},
};

const DTypeInfo& info(DType dtype) {
    for (const DTypeInfo& i : kTypes)
        if (i.dtype == dtype) return i;
    fail("unknown dtype ", int(dtype));
}

}  // namespace

std::string_view dtype_name(DType dtype) {
    return info(dtype).name;
}

std::optional<DType> dtype_from_name(std::string_view name) {
    for (const DTypeInfo& i : kTypes)
        if (i.name == name) return i.dtype;
    return std::nullopt;
}

std::optional<DType> dtype_from_safetensors(std::string_view name) {
    for (const DTypeInfo& i : kTypes)
        if (!i.safetensors_name.empty() && i.safetensors_name == name) return i.dtype;
    return std::nullopt;
}

std::string_view dtype_safetensors_name(DType dtype) {
    const std::string_view name = info(dtype).safetensors_name;
    if (name.empty()) fail(dtype_name(dtype), " has no safetensors dtype");
    return name;
}

int64_t dtype_block_size(DType dtype) {
    return info(dtype).block_size;
}

int64_t dtype_block_bytes(DType dtype) {
    return info(dtype).block_bytes;
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

bool is_quantized_weight_type(DType dtype) {
    return dtype == DType::Q8_0 || dtype == DType::Q5_0 || dtype == DType::Q4_0 ||
           dtype == DType::Q4_K || dtype == DType::Q5_K || dtype == DType::Q6_K ||
           dtype == DType::MXFP4;
}

bool is_weight_type(DType dtype) {
    return is_float_weight_type(dtype) || is_quantized_weight_type(dtype);
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

// Element types of tensors and their conversions to and from f32.
//
// Floating types are scalar (block size 1). Block-quantized weight types have the exact GGUF
// block layouts (kernels/cpu/quant.h): a row of n elements is n / block_size blocks, which is why
// sizes are asked for through row_bytes() rather than numel * element size. Q8_K is the
// activation-side partner of the K-quants in dot products, never a weight type.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string_view>

namespace tandem {

enum class DType : uint8_t {
    F32,
    F16,
    BF16,
    I32,
    I64,
    Q8_0,
    Q4_0,
    Q4_K,
    Q5_K,
    Q6_K,
    Q8_K,
    Q5_0,
    MXFP4,
};

std::string_view dtype_name(DType dtype);                     // "f32", "bf16", "q4_k", ...
std::optional<DType> dtype_from_name(std::string_view name);  // inverse of dtype_name
// Parses the dtype strings of the safetensors format ("F32", "BF16", ...); nullopt if unknown.
std::optional<DType> dtype_from_safetensors(std::string_view name);
std::string_view dtype_safetensors_name(DType dtype);

// Elements per block and bytes per block; 1 and sizeof(element) for scalar types.
int64_t dtype_block_size(DType dtype);
int64_t dtype_block_bytes(DType dtype);
// Bytes of a row of n elements; n must be a multiple of the block size.
int64_t row_bytes(DType dtype, int64_t n);
bool is_float_weight_type(DType dtype);      // f32, f16, bf16
bool is_quantized_weight_type(DType dtype);  // q8_0, q5_0, q4_0, q4_k, q5_k, q6_k, mxfp4
bool is_weight_type(DType dtype);            // either: what a weight matrix may be stored in

// always_inline: these are also used by the per-ISA kernel files; an out-of-line copy compiled
// for AVX-512 must never be the one the linker keeps for baseline code.
[[gnu::always_inline]] inline float bf16_to_f32(uint16_t bits) {
    return std::bit_cast<float>(uint32_t(bits) << 16);
}

// Round to nearest even, as torch's .to(torch.bfloat16) does; NaN stays NaN.
[[gnu::always_inline]] inline uint16_t f32_to_bf16(float value) {
    uint32_t bits = std::bit_cast<uint32_t>(value);
    if ((bits & 0x7fffffffu) > 0x7f800000u) return uint16_t((bits >> 16) | 0x40);
    bits += 0x7fffu + ((bits >> 16) & 1u);
    return uint16_t(bits >> 16);
}

float f16_to_f32(uint16_t bits);
uint16_t f32_to_f16(float value);  // round to nearest even, overflow to infinity

}  // namespace tandem

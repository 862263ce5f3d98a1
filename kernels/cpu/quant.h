// Block-quantized weight formats with the exact GGUF layouts (ggml's ggml-common.h), and their
// reference quantizers and dequantizers.
//
// Blocks run along the input (k) dimension of a weight row. Q8_0 and Q4_0 quantize exactly as
// ggml's reference code and gguf-py do (bit for bit); the K-quants use ggml's reference
// algorithms (make_qkx2_quants for Q4_K/Q5_K, make_qx_quants for Q6_K). Q5_0 (Q4_0 with a fifth
// bit, which llama.cpp's K-quant files use for rows that are not whole super-blocks) quantizes as
// ggml's reference too. Activations are quantized to the weight type's dot-product partner: Q8_0
// for Q8_0/Q5_0/Q4_0, Q8_K for the K-quants.
// MXFP4 rounds each element to the nearest e2m1 value under the smallest power-of-two scale that
// keeps the block's largest magnitude within 6 (so nothing saturates; ggml's reference picks the
// scale from floor(log2(amax)) and clips instead). It pairs with Q8_0 activations.
// These functions are the slow, obviously-correct path: load-time quantization and tests.
#pragma once

#include <bit>
#include <cstdint>

#include "kernels/dtype.h"

namespace tandem::cpu {

inline constexpr int64_t kQK = 32;    // elements per Q8_0 / Q4_0 block
inline constexpr int64_t kQKK = 256;  // elements per K-quant super-block

struct BlockQ8_0 {
    uint16_t d;  // f16 scale
    int8_t qs[kQK];
};
struct BlockQ4_0 {
    uint16_t d;           // f16 scale
    uint8_t qs[kQK / 2];  // element j in the low nibble of byte j (j < 16), else high of j - 16
};
struct BlockQ5_0 {
    uint16_t d;           // f16 scale
    uint8_t qh[4];        // bit j: fifth bit of element j
    uint8_t qs[kQK / 2];  // low four bits, nibbles as in Q4_0
};
// MXFP4 (OCP microscaling, as gpt-oss's checkpoints and GGUF type 39 hold it): 32 e2m1 values
// sharing one e8m0 scale. Element j is value(nibble) * 2^(e - 127), where the e2m1 nibble (sign,
// two exponent bits, one mantissa bit) is one of ±{0, 0.5, 1, 1.5, 2, 3, 4, 6}. The nibbles are
// laid out as GGUF's (and Q4_0's): element j in the low nibble of byte j (j < 16), else in the
// high nibble of byte j - 16. Hugging Face's checkpoints pack elements (2i, 2i + 1) into byte i
// instead; models/architectures/gpt_oss.cpp repacks those at load.
struct BlockMxfp4 {
    uint8_t e;            // e8m0 shared exponent, bias 127 (255 would be NaN; never written)
    uint8_t qs[kQK / 2];  // e2m1 nibbles, order as in Q4_0
};

// Twice each e2m1 value by nibble: integers, so that a dot with 8-bit activations stays in
// integer arithmetic; the factor of two goes into the scale (mxfp4_half_scale).
inline constexpr int8_t kMxfp4Doubled[16] = {0, 1,  2,  3,  4,  6,  8,  12,
                                             0, -1, -2, -3, -4, -6, -8, -12};

// 2^(e - 128): the scale of kMxfp4Doubled's values, exact for every e (e < 2 is an f32
// subnormal, 2^-127 or 2^-128).
[[gnu::always_inline]] inline float mxfp4_half_scale(uint8_t e) {
    const uint32_t bits = e >= 2 ? uint32_t(e - 1) << 23 : 0x00200000u << e;
    return std::bit_cast<float>(bits);
}

struct BlockQ4_K {
    uint16_t d, dmin;      // f16 super-block scales of the 6-bit sub-block scales and mins
    uint8_t scales[12];    // 8 x (6-bit scale, 6-bit min), packed
    uint8_t qs[kQKK / 2];  // 4 chunks of 32 bytes: low nibbles sub-block 2c, high nibbles 2c + 1
};
struct BlockQ5_K {
    uint16_t d, dmin;
    uint8_t scales[12];
    uint8_t qh[kQKK / 8];  // bit b of byte l: fifth bit of element l of sub-block b
    uint8_t qs[kQKK / 2];
};
struct BlockQ6_K {
    uint8_t ql[kQKK / 2];  // low 4 bits
    uint8_t qh[kQKK / 4];  // high 2 bits
    int8_t scales[kQKK / 16];
    uint16_t d;
};
struct BlockQ8_K {
    float d;
    int8_t qs[kQKK];
    int16_t bsums[kQKK / 16];  // sums of groups of 16 qs, for the K-quants' min terms
};

static_assert(sizeof(BlockQ8_0) == 34 && sizeof(BlockQ4_0) == 18 && sizeof(BlockQ5_0) == 22 &&
              sizeof(BlockMxfp4) == 17 && sizeof(BlockQ4_K) == 144 && sizeof(BlockQ5_K) == 176 &&
              sizeof(BlockQ6_K) == 210 && sizeof(BlockQ8_K) == 292);

// The 6-bit scale and min of sub-block j (0..7) of a Q4_K/Q5_K block.
[[gnu::always_inline]] inline void get_scale_min_k4(int j, const uint8_t* q, uint8_t* scale,
                                                    uint8_t* min) {
    if (j < 4) {
        *scale = q[j] & 63;
        *min = q[j + 4] & 63;
    } else {
        *scale = uint8_t((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *min = uint8_t((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

// x: n floats, n a multiple of the block size of `type`; out: row_bytes(type, n) bytes.
// Throws tandem::Error for a type that is not block-quantized or a bad n.
void quantize_row(DType type, const float* x, void* out, int64_t n);
void dequantize_row(DType type, const void* in, float* out, int64_t n);

// The activation type that weights of `type` are dotted with: Q8_0 or Q8_K; F32 for float types.
DType vec_dot_type(DType weight_type);

// The type a tensor quantized to `requested` gets when its rows have k elements: the requested
// type if k is a multiple of its block, else (as llama.cpp does) a 32-element block type, else
// bf16.
DType quant_type_for_row(DType requested, int64_t k);

}  // namespace tandem::cpu

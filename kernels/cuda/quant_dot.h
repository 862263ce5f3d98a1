// Integer dot products of quantized weights with 8-bit activations, the arithmetic of the
// quantized GEMV (linear.cu): x is quantized once per call to 32-element int8 blocks with an f32
// scale (q8_scale, q8_round), and each lane dots one chunk of 8 weight values (quant_blocks.h's
// chunk geometry) with the 8 matching int8 activations as two __dp4a, 4 bytes at a time.
// g++ compiles these too: tests/unit/test_cuda_quant_twins.cpp checks them against float64 of the
// dequantized operands on every CI run.
//
// Offsets (Q4_0's -8, Q5_0's -16, Q6_K's -32) and the K-quants' min terms need the sum of the
// chunk's activations: a lane holds a quarter of an activation block, so the chunk sum comes from
// a third and fourth __dp4a against 0x01010101 rather than from a stored block sum (exact integers
// either way, and no extra bytes to read).
//
// Activation layout (device scratch): xq int8 [n_tokens, k] and xd f32 [n_tokens, k / 32], the
// scale of each 32-block. k is a multiple of 32 (every quantized weight type's block).
#pragma once
#include <cmath>
#include <cstdint>

#include "kernels/cuda/host_device.h"
#include "kernels/cuda/quant_blocks.h"
#include "kernels/dtype.h"

namespace tandem::cuda {

inline constexpr int kQ8Block = 32;  // activations per int8 block (one scale)

// a · b as four signed byte products, plus c.
TANDEM_HD int32_t dp4a(uint32_t a, uint32_t b, int32_t c) {
#ifdef __CUDA_ARCH__
    return __dp4a(int(a), int(b), c);
#else
    for (int i = 0; i < 4; ++i)
        c += int32_t(int8_t(uint8_t(a >> (8 * i)))) * int32_t(int8_t(uint8_t(b >> (8 * i))));
    return c;
#endif
}

// The scale of a block whose largest |x| is amax, and its inverse. IEEE division on both sides
// (nvcc's default -prec-div=true), so the host computes the GPU's bits. A block whose scale is
// below the smallest normal float (amax < 1.5e-36, zero included) gets inverse 0, so its quants
// are 0: 1 / d would overflow to infinity and x * infinity has no int8.
struct Q8Scale {
    float d, inv;
};
TANDEM_HD Q8Scale q8_scale(float amax) {
    const float d = amax / 127.0f;
    return {d, d >= 1.17549435e-38f ? 1.0f / d : 0.0f};
}

// x to the nearest of -127..127 in steps of 1 / inv (ties to even on both sides).
TANDEM_HD int8_t q8_round(float x, float inv) {
#ifdef __CUDA_ARCH__
    return int8_t(__float2int_rn(__fmul_rn(x, inv)));
#else
    return int8_t(std::lrintf(x * inv));
#endif
}

// One activation block quantized on the host, as the quantize kernel does per warp.
inline float quantize_q8_block(const float x[kQ8Block], int8_t q[kQ8Block]) {
    float amax = 0.0f;
    for (int i = 0; i < kQ8Block; ++i)
        amax = std::fmax(amax, std::fabs(x[i]));
    const Q8Scale s = q8_scale(amax);
    for (int i = 0; i < kQ8Block; ++i)
        q[i] = q8_round(x[i], s.inv);
    return s.d;
}

// v as a float for |v| < 2^22 without an int-to-float conversion (quarter rate on the GPU): the
// bits of 1.5 * 2^23 + v, minus 1.5 * 2^23. Exact.
TANDEM_HD float small_int_to_f32(int32_t v) {
    return bits_to_f32(0x4B400000u + uint32_t(v)) - 12582912.0f;
}

// scale_min_k4() from the 12 scale bytes as three little-endian words a, b, c (bytes 0..3, 4..7,
// 8..11), with selects instead of a branch: the lanes of a warp take all eight sub-blocks, so
// the branch on j < 4 would diverge.
TANDEM_HD void scale_min_k4_words(int j, uint32_t a, uint32_t b, uint32_t c, int& scale, int& min) {
    const int shift = 8 * (j & 3);
    const uint32_t aj = a >> shift, bj = b >> shift, cj = c >> shift;
    const bool low = j < 4;
    scale = int(low ? aj & 63u : (cj & 0xFu) | ((aj >> 6) & 3u) << 4);
    min = int(low ? bj & 63u : ((cj >> 4) & 0xFu) | ((bj >> 6) & 3u) << 4);
}

// Four 4-bit fields at bits 0..3 of each byte of `bits` >> shift, as bytes 0..15.
TANDEM_HD uint32_t nibbles(uint32_t bits, int shift) {
    return (bits >> shift) & 0x0F0F0F0Fu;
}

// Bits 0..3 of h spread to bit 4 of bytes 0..3 (the Q5_0 fifth bits of four values).
TANDEM_HD uint32_t spread_bit4(uint32_t h) {
    return ((h & 0xFu) * 0x00204081u & 0x01010101u) << 4;
}

// Little-endian u32 from a 2-byte aligned pointer (the 32-blocks' quants are 2-byte aligned).
TANDEM_HD uint32_t load_u32_a2(const uint8_t* p) {
    return uint32_t(load_u16(p)) | uint32_t(load_u16(p + 2)) << 16;
}

// Little-endian u32 from any address (MXFP4's 17-byte blocks put its quants at odd addresses).
TANDEM_HD uint32_t load_u32_a1(const uint8_t* p) {
    return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
}

// Four MXFP4 nibbles (bits 0..3 of each byte of `nibble_bytes`) as four signed bytes of their
// doubled e2m1 values (mxfp4_doubled, -12..12).
TANDEM_HD uint32_t mxfp4_doubled_bytes(uint32_t nibble_bytes) {
    uint32_t out = 0;
    for (int i = 0; i < 4; ++i)
        out |= uint32_t(uint8_t(int8_t(mxfp4_doubled((nibble_bytes >> (8 * i)) & 0xFu))))
               << (8 * i);
    return out;
}

// One chunk of 8 weight values as the dot needs them: the quants as bytes (signed for Q8_0 and
// MXFP4, 0..63 otherwise) and value_i = d * (q_i - offset) - m, offset and m fixed per type (m only
// for the K-quants with mins). Unpacked once per chunk, dotted with every token.
struct WeightChunk {
    uint32_t q0, q1;  // values 0..3 and 4..7, one byte each
    float d, m;
};

template <DType T>
inline constexpr int kQuantOffset = T == DType::Q4_0   ? 8
                                    : T == DType::Q5_0 ? 16
                                    : T == DType::Q6_K ? 32
                                                       : 0;

template <DType T>
TANDEM_HD WeightChunk unpack_chunk(const uint8_t* row, int64_t chunk) {
    constexpr int kChunksPerBlock = BlockInfo<T>::kValues / kChunk;
    const uint8_t* block = row + (chunk / kChunksPerBlock) * BlockInfo<T>::kBytes;
    const int c = int(chunk % kChunksPerBlock);
    if constexpr (T == DType::Q8_0) {
        const uint8_t* qs = block + 2 + kChunk * c;
        return {load_u32_a2(qs), load_u32_a2(qs + 4), f16_bits_to_f32(load_u16(block)), 0.0f};
    } else if constexpr (T == DType::MXFP4) {
        const uint8_t* qs = block + 1 + kChunk * (c & 1);
        const int shift = (c >> 1) * 4;
        return {mxfp4_doubled_bytes(nibbles(load_u32_a1(qs), shift)),
                mxfp4_doubled_bytes(nibbles(load_u32_a1(qs + 4), shift)),
                mxfp4_half_scale(block[0]), 0.0f};
    } else if constexpr (T == DType::Q4_0 || T == DType::Q5_0) {
        constexpr bool kFifth = T == DType::Q5_0;
        const uint8_t* qs = block + (kFifth ? 6 : 2) + kChunk * (c & 1);
        const int shift = (c >> 1) * 4;
        uint32_t q0 = nibbles(load_u32_a2(qs), shift), q1 = nibbles(load_u32_a2(qs + 4), shift);
        if constexpr (kFifth) {
            const uint32_t qh = load_u32_a2(block + 2) >> (kChunk * c);
            q0 |= spread_bit4(qh);
            q1 |= spread_bit4(qh >> 4);
        }
        return {q0, q1, f16_bits_to_f32(load_u16(block)), 0.0f};
    } else if constexpr (T == DType::Q4_K || T == DType::Q5_K) {
        constexpr bool kFifth = T == DType::Q5_K;
        const int s = c >> 2, l0 = (c & 3) * kChunk;
        // d, dmin and the 12 scale bytes in one 16-byte load (blocks are 16-byte aligned).
        const U32x4 head = load_u128(block);
        int sc, m;
        scale_min_k4_words(s, head.v[1], head.v[2], head.v[3], sc, m);
        const uint64_t q8 = load_u64(block + (kFifth ? 48 : 16) + 32 * (s >> 1) + l0);
        const int shift = (s & 1) * 4;
        uint32_t q0 = nibbles(uint32_t(q8), shift), q1 = nibbles(uint32_t(q8 >> 32), shift);
        if constexpr (kFifth) {
            const uint64_t h8 = load_u64(block + 16 + l0) >> s;
            q0 |= (uint32_t(h8) & 0x01010101u) << 4;
            q1 |= (uint32_t(h8 >> 32) & 0x01010101u) << 4;
        }
        return {q0, q1, mul_rn(f16_bits_to_f32(uint16_t(head.v[0])), small_int_to_f32(sc)),
                mul_rn(f16_bits_to_f32(uint16_t(head.v[0] >> 16)), small_int_to_f32(m))};
    } else if constexpr (T == DType::Q6_K) {
        const int h = c >> 4, e0 = (c & 15) * kChunk;
        const int t = e0 >> 5, l0 = e0 & 31;
        const uint8_t* ql = block + 64 * h + 32 * (t & 1) + l0;
        const uint8_t* qh = block + 128 + 32 * h + l0;
        const int8_t scale = int8_t(block[192 + 8 * h + 2 * t + (l0 >> 4)]);
        const int shift = (t >> 1) * 4;
        const uint32_t q0 =
            nibbles(load_u32_a2(ql), shift) | ((load_u32_a2(qh) >> (2 * t)) & 0x03030303u) << 4;
        const uint32_t q1 = nibbles(load_u32_a2(ql + 4), shift) |
                            ((load_u32_a2(qh + 4) >> (2 * t)) & 0x03030303u) << 4;
        return {q0, q1, mul_rn(f16_bits_to_f32(load_u16(block + 208)), small_int_to_f32(scale)),
                0.0f};
    } else {
        static_assert(T == DType::Q8_0, "not a quantized weight type");
    }
}

// acc + w · (x0, x1 as int8 values times dx), in the kernel's order: integer sums (exact; at
// most 8 * 95 * 127 in magnitude, so small_int_to_f32 applies), the scale product, one FMA per
// term. The chunk sum Σ x is only formed where an offset or a min
// needs it.
template <DType T>
TANDEM_HD float chunk_dot_q8(const WeightChunk& w, uint32_t x0, uint32_t x1, float dx, float acc) {
    const int32_t qx = dp4a(w.q1, x1, dp4a(w.q0, x0, 0));
    if constexpr (T == DType::Q8_0 || T == DType::MXFP4)
        return fmaf(mul_rn(w.d, dx), small_int_to_f32(qx), acc);
    const int32_t sx = dp4a(0x01010101u, x1, dp4a(0x01010101u, x0, 0));
    if constexpr (T == DType::Q4_K || T == DType::Q5_K) {
        acc = fmaf(mul_rn(w.d, dx), small_int_to_f32(qx), acc);
        return fmaf(-mul_rn(w.m, dx), small_int_to_f32(sx), acc);
    } else {
        return fmaf(mul_rn(w.d, dx), small_int_to_f32(qx - kQuantOffset<T> * sx), acc);
    }
}

// One row's dot product with one token's quantized activations in the GEMV kernel's exact order
// (lane l takes chunks l, l + 32, ... with chunk_dot_q8, then the butterfly). Host only: the twin
// and GPU tests compare with it.
template <DType T>
float emulate_warp_row_dot_q8(const uint8_t* row, int64_t k, const int8_t* xq, const float* xd) {
    float partial[32] = {};
    for (int64_t c = 0; c < k / kChunk; ++c) {
        uint32_t x0, x1;
        std::memcpy(&x0, xq + c * kChunk, 4);
        std::memcpy(&x1, xq + c * kChunk + 4, 4);
        partial[c % 32] = chunk_dot_q8<T>(unpack_chunk<T>(row, c), x0, x1,
                                          xd[c * kChunk / kQ8Block], partial[c % 32]);
    }
    return butterfly_sum_32(partial);
}

}  // namespace tandem::cuda

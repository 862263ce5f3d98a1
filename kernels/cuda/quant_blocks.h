// Dequantization of every weight type's blocks, shaped the way a GPU lane consumes them: "the 8
// values of chunk c of a row", a chunk being 8 consecutive elements along k. The kernels of
// linear.cu and moe_experts.cu call these functions; g++ compiles them too, so the CPU twin test
// (tests/unit/test_cuda_quant_twins.cpp) checks on every CI run that they give exactly the values
// of cpu::dequantize_row.
//
// Layouts are the GGUF blocks of kernels/cpu/quant.h, read in place (no repacking at load):
//   q8_0 34 B / 32 values, q4_0 18 B / 32, q5_0 22 B / 32, q4_k 144 B / 256, q5_k 176 B / 256,
//   q6_k 210 B / 256, mxfp4 17 B / 32; f32, f16, bf16 rows of plain elements.
// Alignment: float rows are read as 16-byte vectors on the GPU, so the kernels only take them
// when k % 8 == 0 and the row pointer is 16-byte aligned (linear.cu checks). Q4_K/Q5_K blocks are
// 16-byte multiples and their quants are read 8 bytes at a time; the other block types are only
// 2-byte aligned (MXFP4's 17-byte blocks not even that) and are read byte by byte.
//
// Products whose rounding matters go through mul_rn(), which forbids nvcc from fusing them into
// an FMA, so the GPU values equal the CPU reference bit for bit.
#pragma once
#include <cmath>
#include <cstdint>

#include "kernels/cuda/host_device.h"
#include "kernels/dtype.h"

namespace tandem::cuda {

inline constexpr int kChunk = 8;  // values per chunk

TANDEM_HD float mul_rn(float a, float b) {
#ifdef __CUDA_ARCH__
    return __fmul_rn(a, b);
#else
    return a * b;
#endif
}

TANDEM_HD uint16_t load_u16(const uint8_t* p) {  // p 2-byte aligned
#ifdef __CUDA_ARCH__
    return *reinterpret_cast<const uint16_t*>(p);
#else
    uint16_t v;
    std::memcpy(&v, p, sizeof v);
    return v;
#endif
}

// u - bias as a float for 0 <= u < 2^23 and a small integer bias, without an int-to-float
// conversion (a quarter-rate instruction on the GPU): the bits of 2^23 + u, minus 2^23 + bias.
// Exact, and the same code on both sides, so the twin test covers it.
TANDEM_HD float biased_to_f32(uint32_t u, float bias) {
    return bits_to_f32(0x4B000000u | u) - (8388608.0f + bias);
}

struct U32x4 {
    uint32_t v[4];
};

TANDEM_HD U32x4 load_u128(const uint8_t* p) {  // p 16-byte aligned
    U32x4 out;
#ifdef __CUDA_ARCH__
    const uint4 v = *reinterpret_cast<const uint4*>(p);
    out.v[0] = v.x, out.v[1] = v.y, out.v[2] = v.z, out.v[3] = v.w;
#else
    std::memcpy(out.v, p, sizeof out.v);
#endif
    return out;
}

TANDEM_HD uint64_t load_u64(const uint8_t* p) {  // p 8-byte aligned
#ifdef __CUDA_ARCH__
    return *reinterpret_cast<const uint64_t*>(p);
#else
    uint64_t v;
    std::memcpy(&v, p, sizeof v);
    return v;
#endif
}

// Block geometry of each weight type: values and bytes per block (1 and the element size for
// float types).
template <DType T>
struct BlockInfo;
template <>
struct BlockInfo<DType::F32> {
    static constexpr int kValues = 1, kBytes = 4;
};
template <>
struct BlockInfo<DType::F16> {
    static constexpr int kValues = 1, kBytes = 2;
};
template <>
struct BlockInfo<DType::BF16> {
    static constexpr int kValues = 1, kBytes = 2;
};
template <>
struct BlockInfo<DType::Q8_0> {
    static constexpr int kValues = 32, kBytes = 34;
};
template <>
struct BlockInfo<DType::Q4_0> {
    static constexpr int kValues = 32, kBytes = 18;
};
template <>
struct BlockInfo<DType::Q5_0> {
    static constexpr int kValues = 32, kBytes = 22;
};
template <>
struct BlockInfo<DType::MXFP4> {
    static constexpr int kValues = 32, kBytes = 17;
};
template <>
struct BlockInfo<DType::Q4_K> {
    static constexpr int kValues = 256, kBytes = 144;
};
template <>
struct BlockInfo<DType::Q5_K> {
    static constexpr int kValues = 256, kBytes = 176;
};
template <>
struct BlockInfo<DType::Q6_K> {
    static constexpr int kValues = 256, kBytes = 210;
};

// --- one block's chunk: `block` points at the block, c is the chunk inside it ---------------

// Q8_0: d (f16), qs[32]. Chunk c (0..3): d * qs[8c + i].
TANDEM_HD void dequant_q8_0(const uint8_t* block, int c, float out[kChunk]) {
    const float d = f16_bits_to_f32(load_u16(block));
    const int8_t* qs = reinterpret_cast<const int8_t*>(block + 2) + kChunk * c;
    for (int i = 0; i < kChunk; ++i)
        out[i] = mul_rn(d, biased_to_f32(uint8_t(qs[i]) ^ 0x80u, 128.0f));
}

// Q4_0: d, qs[16]; value j < 16 is the low nibble of byte j, value j >= 16 the high nibble of
// byte j - 16. Chunk c (0..3): bytes 8 (c % 2) .. +7, low nibbles for c < 2.
TANDEM_HD void dequant_q4_0(const uint8_t* block, int c, float out[kChunk]) {
    const float d = f16_bits_to_f32(load_u16(block));
    const uint8_t* qs = block + 2 + kChunk * (c & 1);
    const int shift = (c >> 1) * 4;
    for (int i = 0; i < kChunk; ++i)
        out[i] = mul_rn(d, biased_to_f32((qs[i] >> shift) & 0xFu, 8.0f));
}

// Q5_0: d, qh (32 fifth bits, bit j for value j), qs[16] as Q4_0.
TANDEM_HD void dequant_q5_0(const uint8_t* block, int c, float out[kChunk]) {
    const float d = f16_bits_to_f32(load_u16(block));
    const uint32_t qh = uint32_t(block[2]) | uint32_t(block[3]) << 8 | uint32_t(block[4]) << 16 |
                        uint32_t(block[5]) << 24;
    const uint8_t* qs = block + 6 + kChunk * (c & 1);
    const int shift = (c >> 1) * 4;
    for (int i = 0; i < kChunk; ++i) {
        const int j = kChunk * c + i;
        const uint32_t q = ((qs[i] >> shift) & 0xFu) | (((qh >> j) & 1u) << 4);
        out[i] = mul_rn(d, biased_to_f32(q, 16.0f));
    }
}

// MXFP4's e8m0 exponent e as the scale of its doubled e2m1 values: 2^(e - 128), exact for every e
// (e < 2 is an f32 subnormal), as cpu::mxfp4_half_scale.
TANDEM_HD float mxfp4_half_scale(uint8_t e) {
    return bits_to_f32(e >= 2 ? uint32_t(e - 1) << 23 : 0x00200000u << e);
}

// Twice the e2m1 value of a nibble (sign bit 3, magnitude bits 0..2) as a small integer, as
// cpu::kMxfp4Doubled: the doubled magnitudes 0 1 2 3 4 6 8 12 are the nibbles of 0xC8643210, so
// no table in memory is needed.
TANDEM_HD int mxfp4_doubled(uint32_t nibble) {
    const int magnitude = int((0xC8643210u >> (4 * (nibble & 7u))) & 0xFu);
    return (nibble & 8u) ? -magnitude : magnitude;
}

// MXFP4: e (e8m0), qs[16] with the nibble order of Q4_0. Chunk c (0..3): bytes 8 (c % 2) .. +7,
// low nibbles for c < 2.
TANDEM_HD void dequant_mxfp4(const uint8_t* block, int c, float out[kChunk]) {
    const float d = mxfp4_half_scale(block[0]);
    const uint8_t* qs = block + 1 + kChunk * (c & 1);
    const int shift = (c >> 1) * 4;
    for (int i = 0; i < kChunk; ++i)
        out[i] = mul_rn(d, float(mxfp4_doubled((qs[i] >> shift) & 0xFu)));
}

// Q4_K / Q5_K scale and min of sub-block j (0..7) from the 12 packed bytes (get_scale_min_k4).
TANDEM_HD void scale_min_k4(int j, const uint8_t* q, int& scale, int& min) {
    if (j < 4) {
        scale = q[j] & 63;
        min = q[j + 4] & 63;
    } else {
        scale = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        min = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

// Q4_K: d, dmin, scales[12], qs[128]. Sub-block s (32 values) = chunks 4s..4s+3; its quants are
// the low (s even) or high (s odd) nibbles of qs[32 (s / 2) ..]. value = d*sc * q - dmin*m.
// Q5_K (qh != nullptr in the CPU code): qh[32] after the scales, bit s of qh[l] is the fifth bit.
template <bool kFifthBit>
TANDEM_HD void dequant_k4(const uint8_t* block, int c, float out[kChunk]) {
    const float d = f16_bits_to_f32(load_u16(block));
    const float dmin = f16_bits_to_f32(load_u16(block + 2));
    const uint8_t* scales = block + 4;
    const int s = c >> 2, l0 = (c & 3) * kChunk;
    int sc, m;
    scale_min_k4(s, scales, sc, m);
    const float dl = mul_rn(d, float(sc));
    const float ml = mul_rn(dmin, float(m));
    const uint8_t* qs = block + (kFifthBit ? 48 : 16) + 32 * (s >> 1) + l0;
    // Shifted once, so each value is a constant-position bit field of a 32-bit half.
    const uint64_t q8 = load_u64(qs) >> ((s & 1) * 4);
    uint64_t h8 = 0;
    if constexpr (kFifthBit) h8 = load_u64(block + 16 + l0) >> s;
    for (int i = 0; i < kChunk; ++i) {
        uint32_t q = uint32_t(q8 >> (8 * i)) & 0xFu;
        if constexpr (kFifthBit) q |= (uint32_t(h8 >> (8 * i)) & 1u) << 4;
        out[i] = mul_rn(dl, biased_to_f32(q, 0.0f)) - ml;
    }
}

// Q6_K: ql[128], qh[64], scales[16] (int8), d. Half h (128 values) = chunks 16h..16h+15; in a
// half, quarter t (32 values) takes the low (t = 0, 1) or high (t = 2, 3) nibbles of
// ql[64h + 32 (t % 2) + l], 2 bits (2t) of qh[32h + l], and scale scales[8h + 2t + l / 16].
TANDEM_HD void dequant_q6_k(const uint8_t* block, int c, float out[kChunk]) {
    const float d = f16_bits_to_f32(load_u16(block + 208));
    const int h = c >> 4, e0 = (c & 15) * kChunk;
    const int t = e0 >> 5, l0 = e0 & 31;
    const uint8_t* ql = block + 64 * h + 32 * (t & 1) + l0;
    const uint8_t* qh = block + 128 + 32 * h + l0;
    const int8_t scale = int8_t(block[192 + 8 * h + 2 * t + (l0 >> 4)]);
    const float ds = mul_rn(d, float(scale));
    const int shift = (t >> 1) * 4;
    for (int i = 0; i < kChunk; ++i) {
        const uint32_t q = ((ql[i] >> shift) & 0xFu) | (((qh[i] >> (2 * t)) & 3u) << 4);
        out[i] = mul_rn(ds, biased_to_f32(q, 32.0f));
    }
}

// --- a row's chunk: the kernels' entry point ---------------------------------------------------

// The 8 values of chunk `chunk` (elements 8 chunk .. 8 chunk + 7) of a row of type T that starts
// at `row`.
template <DType T>
TANDEM_HD void dequant_chunk(const uint8_t* row, int64_t chunk, float out[kChunk]) {
    if constexpr (T == DType::F32) {
        const U32x4 a = load_u128(row + chunk * 32), b = load_u128(row + chunk * 32 + 16);
        for (int i = 0; i < 4; ++i) {
            out[i] = bits_to_f32(a.v[i]);
            out[4 + i] = bits_to_f32(b.v[i]);
        }
    } else if constexpr (T == DType::F16 || T == DType::BF16) {
        const U32x4 a = load_u128(row + chunk * 16);
        for (int i = 0; i < 4; ++i) {
            const uint16_t lo = uint16_t(a.v[i] & 0xFFFFu), hi = uint16_t(a.v[i] >> 16);
            if constexpr (T == DType::F16) {
                out[2 * i] = f16_bits_to_f32(lo);
                out[2 * i + 1] = f16_bits_to_f32(hi);
            } else {
                out[2 * i] = bf16_bits_to_f32(lo);
                out[2 * i + 1] = bf16_bits_to_f32(hi);
            }
        }
    } else {
        constexpr int kChunksPerBlock = BlockInfo<T>::kValues / kChunk;
        const uint8_t* block = row + (chunk / kChunksPerBlock) * BlockInfo<T>::kBytes;
        const int c = int(chunk % kChunksPerBlock);
        if constexpr (T == DType::Q8_0)
            dequant_q8_0(block, c, out);
        else if constexpr (T == DType::Q4_0)
            dequant_q4_0(block, c, out);
        else if constexpr (T == DType::Q5_0)
            dequant_q5_0(block, c, out);
        else if constexpr (T == DType::Q4_K)
            dequant_k4<false>(block, c, out);
        else if constexpr (T == DType::Q5_K)
            dequant_k4<true>(block, c, out);
        else if constexpr (T == DType::Q6_K)
            dequant_q6_k(block, c, out);
        else if constexpr (T == DType::MXFP4)
            dequant_mxfp4(block, c, out);
        else
            static_assert(T == DType::Q6_K, "not a weight type");
    }
}

// --- the dot order ------------------------------------------------------------------------------

// acc + w · x over one chunk, in element order, one FMA each (fmaf is correctly rounded on both
// sides, so the host computes the GPU's bits).
TANDEM_HD float chunk_dot(const float w[kChunk], const float x[kChunk], float acc) {
    for (int i = 0; i < kChunk; ++i)
        acc = fmaf(w[i], x[i], acc);
    return acc;
}

// The warp's reduction order: lane partials combined by the butterfly of __shfl_xor_sync with
// offsets 16, 8, 4, 2, 1. This is the host's emulation of warp_sum() in the kernels (the CPU twin
// test uses it to bound the order's rounding against float64).
inline float butterfly_sum_32(const float partial[32]) {
    float p[32];
    for (int i = 0; i < 32; ++i)
        p[i] = partial[i];
    for (int offset = 16; offset > 0; offset /= 2) {
        float next[32];
        for (int i = 0; i < 32; ++i)
            next[i] = p[i] + p[i ^ offset];
        for (int i = 0; i < 32; ++i)
            p[i] = next[i];
    }
    return p[0];
}

// One row's dot product with one token in the GEMV kernel's exact order: lane l takes chunks l,
// l + 32, ... in turn (chunk_dot), then the butterfly. Host only (the emulation the twin test
// checks); the kernels run the same steps spread over a warp.
template <DType T>
float emulate_warp_row_dot(const uint8_t* row, int64_t k, const float* x) {
    float partial[32] = {};
    for (int64_t c = 0; c < k / kChunk; ++c) {
        float w[kChunk];
        dequant_chunk<T>(row, c, w);
        partial[c % 32] = chunk_dot(w, x + c * kChunk, partial[c % 32]);
    }
    return butterfly_sum_32(partial);
}

}  // namespace tandem::cuda

// Row dot products of every weight type with its activation format, per instruction set.
//
// A weight row of type T is dotted with an activation row of vec_dot_type(T): f32 for float
// weights, Q8_0 for Q8_0/Q5_0/Q4_0/MXFP4, Q8_K for the K-quants. Activations are quantized once per
// step (quantize_activation) and then reused by every weight row, which is how each weight byte is
// read once per step whatever the number of tokens. The table of the active ISA
// (cpu_isa.h) is returned by vec_dot_kernels().
#pragma once

#include <cstdint>

#include "kernels/cpu/cpu_isa.h"
#include "kernels/dtype.h"

namespace tandem::cpu {

// Dot of one weight row (k elements of its type) with one activation row.
using RowDotFn = float (*)(const void* weight_row, const void* activation_row, int64_t k);
// Dots of one weight row with n (1..kMaxDotTokens) activation rows, each weight block read once.
using RowDotNFn = void (*)(const void* weight_row, const void* const* activation_rows, int n,
                           int64_t k, float* out);
inline constexpr int kMaxDotTokens = 4;
// Dots of n (1..kMaxDotRows) weight rows with one activation row, each activation block read
// once for all of them: the one-token (decode) case, where there are no tokens to share a weight
// load but several rows can share the activation's loads and its per-block setup. Q8_0, Q4_K and
// MXFP4 at the avx2 and avx512 levels (at avx2 with an AVX-VNNI variant chosen at run time);
// elsewhere callers dot one row at a time with RowDotNFn.
using RowsDotFn = void (*)(const void* const* weight_rows, int n, const void* activation_row,
                           int64_t k, float* out);
inline constexpr int kMaxDotRows = 4;

// Calls fn(rows, count) for tiles of up to `streams` rows covering [begin, end), each tile taking
// one row from each of `streams` consecutive stretches of the range. A tile of adjacent rows would
// interleave its reads inside one page, which defeats the hardware stream prefetcher (2.5x slower
// from DRAM in a measurement on the development VM); rows a stretch apart are each read in order.
template <class Fn>
void for_each_row_tile(int64_t begin, int64_t end, int streams, Fn fn) {
    const int64_t stretch = (end - begin + streams - 1) / streams;
    for (int64_t t = 0; t < stretch; ++t) {
        int64_t rows[kMaxDotRows];
        int count = 0;
        for (int s = 0; s < streams; ++s)
            if (const int64_t row = begin + s * stretch + t; row < end) rows[count++] = row;
        fn(rows, count);
    }
}

struct VecDotKernels {
    CpuIsa isa;
    RowDotFn dot_f32;   // f32 weights
    RowDotFn dot_f16;   // f16 weights
    RowDotFn dot_bf16;  // bf16 weights
    RowDotFn dot_q8_0;  // q8_0 weights . q8_0 activations
    RowDotFn dot_q4_0;  // q4_0 weights . q8_0 activations
    RowDotFn dot_q5_0;  // q5_0 weights . q8_0 activations
    RowDotFn dot_q4_k;  // q4_k weights . q8_k activations
    RowDotFn dot_q5_k;
    RowDotFn dot_q6_k;
    RowDotFn dot_mxfp4;  // mxfp4 weights . q8_0 activations
    // Row conversions (KV cache rows, bf16 weights): f32 -> f16 as IEEE, f32 -> bf16 rounded
    // to nearest even. The AVX-512 bf16 store (vcvtneps2bf16) flushes f32 subnormals to zero.
    void (*bf16_to_f32)(const uint16_t* in, float* out, int64_t n);
    void (*f16_to_f32)(const uint16_t* in, float* out, int64_t n);
    void (*f32_to_f16)(const float* in, uint16_t* out, int64_t n);
    void (*f32_to_bf16)(const float* in, uint16_t* out, int64_t n);
    RowDotNFn dotn_f32, dotn_f16, dotn_bf16, dotn_q8_0, dotn_q4_0, dotn_q5_0, dotn_q4_k, dotn_q5_k,
        dotn_q6_k, dotn_mxfp4;
    RowsDotFn dotr_q8_0;   // null where the ISA has none (scalar)
    RowsDotFn dotr_q4_k;   // null where the ISA has none (scalar)
    RowsDotFn dotr_mxfp4;  // null where the ISA has none (scalar)
    // Activations to Q8_0 / Q8_K (k whole blocks), the bytes of quantize_row on every ISA.
    void (*quantize_q8_0)(const float* x, void* out, int64_t k);
    void (*quantize_q8_k)(const float* x, void* out, int64_t k);
};

const VecDotKernels& vec_dot_kernels();                // of the active ISA
const VecDotKernels& vec_dot_kernels_for(CpuIsa isa);  // of a given ISA (tests, benchmarks)

// The dot function for weights of `weight_type` in `kernels`; throws for a non-weight type.
RowDotFn row_dot(const VecDotKernels& kernels, DType weight_type);

RowDotNFn row_dot_n(const VecDotKernels& kernels, DType weight_type);

// The several-row dot for `weight_type`, or null where there is none (see RowsDotFn).
RowsDotFn row_dot_rows(const VecDotKernels& kernels, DType weight_type);

// Converts k floats to the activation format `type` (f32: a copy; q8_0, q8_k: quantized).
void quantize_activation(DType type, const float* x, void* out, int64_t k);

}  // namespace tandem::cpu

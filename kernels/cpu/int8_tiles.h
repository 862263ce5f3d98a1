// The tile path of tile_gemm.h where the CPU has no AVX-512: integer products of int8 weight
// tiles with int8 activations, register-blocked (internal to tile_gemm.cpp).
//
// On AVX2 there is no bf16 dot instruction, and oneDNN's brgemm needs AVX-512, so the large-M
// products of block-quantized weights stay in the integer domain as the dot products of vec_dot.h
// do — weights against activations quantized to Q8_0 (Q8_0 weights) or Q8_K (Q4_K weights), with
// vpmaddubsw/vpmaddwd — but over a tile: the weight rows are unpacked once per tile into a layout
// made for the inner loop (Q8_0: the bytes and their magnitudes, f32 scales, by groups of 8
// blocks; Q4_K: one byte per element with 8 rows interleaved by 4-byte groups, so that a vector
// holds 8 rows and a token's results are 8 lanes, with the sub-block scales and mins as vectors
// over the rows), and each inner loop multiplies several rows with several tokens, so every
// loaded weight vector serves several tokens and every activation several rows. The result is
// the same sum as the dot products' (int32 inside a block or super-block, f32 across), only in
// another order of the f32 additions.
// MXFP4 weights (gpt-oss's experts) take the Q8_0 tiles, their values decoded to doubled integers.
// Non-goals: the other weight types (they keep the dot products below AVX-512), AVX-512 (bf16
// tiles through oneDNN are faster there).
#pragma once

#include <cstdint>

#include "kernels/dtype.h"

namespace tandem::cpu::avx2 {

// Whether int8_tile_gemm handles weights of `type` (Q8_0, Q4_K, MXFP4).
bool int8_tiles_support(DType type);

// y[m, n_rows] (dense f32, overwritten) = acts[m, k] · w_rowsᵀ, where acts are m rows of k
// elements in vec_dot_type(type) (Q8_0 or Q8_K) and w_rows n_rows consecutive rows of `type`.
// Needs the avx2 ISA level; runs on the calling thread with per-thread tile buffers.
void int8_tile_gemm(const void* acts, int64_t m, const void* w_rows, DType type, int64_t n_rows,
                    int64_t k, float* y);

}  // namespace tandem::cpu::avx2

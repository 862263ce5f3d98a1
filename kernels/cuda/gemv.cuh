// Device building blocks of the weight-reading kernels (linear.cu, moe_experts.cu): a warp takes
// a few weight rows (kRowsPerWarp, or a gate and an up row), each lane dequantizing chunks of 8
// values (quant_blocks.h) and dotting them with up to kMaxTokens activation rows, then a
// butterfly warp reduction per row and token. The weights are read once for all tokens; the
// activations come through the read-only cache (small, reused by every row). Included by .cu
// files only.
//
// The order of the arithmetic of each row is the one emulate_warp_row_dot() (quant_blocks.h)
// reproduces on the host: lane l takes chunks l, l + 32, ... with chunk_dot, then warp_sum.
#pragma once
#include <cuda_runtime.h>

#include "kernels/cuda/quant_blocks.h"
#include "kernels/cuda/quant_dot.h"

namespace tandem::cuda {

inline constexpr int kWarpSize = 32;
inline constexpr int kWarpsPerBlock = 8;  // 256-thread blocks
inline constexpr int kGemvThreads = kWarpSize * kWarpsPerBlock;
inline constexpr int kRowsPerWarp = 2;  // weight rows sharing each activation load

// The butterfly of butterfly_sum_32(): every lane ends with the same sum.
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2)
        v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}

// This lane's share of the dot products of kRows weight rows (n_chunks chunks of type T each)
// with the activation rows xs[0 .. n_tokens) (f32, 16-byte aligned), accumulated into
// acc[row][token]. Entries of xs at or past n_tokens must still be valid pointers (they are not
// read). Several rows per warp share each activation load: at 4.5 bits per weight the
// activations, not the weights, would otherwise fill the L1 bandwidth. Each row's arithmetic
// order is that of emulate_warp_row_dot() whatever kRows is.
template <DType T, int kMaxTokens, int kRows>
__device__ __forceinline__ void lane_rows_dot(const uint8_t* const (&rows)[kRows], int64_t n_chunks,
                                              const float* const (&xs)[kMaxTokens], int n_tokens,
                                              float (&acc)[kRows][kMaxTokens]) {
    const int lane = int(threadIdx.x) & (kWarpSize - 1);
    // 4 / kRows chunks per lane and row in flight: enough bytes outstanding per SM to approach
    // HBM bandwidth with ~32 warps per SM (a long-k dense row has few rows per SM).
#pragma unroll(4 / kRows)
    for (int64_t c = lane; c < n_chunks; c += kWarpSize) {
        float w[kRows][kChunk];
#pragma unroll
        for (int r = 0; r < kRows; ++r)
            dequant_chunk<T>(rows[r], c, w[r]);
#pragma unroll
        for (int t = 0; t < kMaxTokens; ++t) {
            if (t < n_tokens) {
                const float4* p = reinterpret_cast<const float4*>(xs[t] + c * kChunk);
                const float4 a = __ldg(p), b = __ldg(p + 1);
                const float x[kChunk] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
#pragma unroll
                for (int r = 0; r < kRows; ++r)
                    acc[r][t] = chunk_dot(w[r], x, acc[r][t]);
            }
        }
    }
}

// The same for quantized weights against 8-bit activations (quant_dot.h): xqs[t] int8 [k] and
// xds[t] f32 [k / 32] per token, 16-byte aligned. Each chunk's weights are unpacked once and
// dotted with every token by __dp4a; each row's order is that of emulate_warp_row_dot_q8().
// Eight int8 activations are 8 bytes where f32 ones were 32: the L1 traffic per weight byte
// falls fourfold, and the float conversions and FMAs per value become a quarter of a __dp4a.
template <DType T, int kMaxTokens, int kRows>
__device__ __forceinline__ void lane_rows_dot_q8(const uint8_t* const (&rows)[kRows],
                                                 int64_t n_chunks,
                                                 const int8_t* const (&xqs)[kMaxTokens],
                                                 const float* const (&xds)[kMaxTokens],
                                                 int n_tokens, float (&acc)[kRows][kMaxTokens]) {
    const int lane = int(threadIdx.x) & (kWarpSize - 1);
#pragma unroll(4 / kRows)
    for (int64_t c = lane; c < n_chunks; c += kWarpSize) {
        WeightChunk w[kRows];
#pragma unroll
        for (int r = 0; r < kRows; ++r)
            w[r] = unpack_chunk<T>(rows[r], c);
#pragma unroll
        for (int t = 0; t < kMaxTokens; ++t) {
            if (t < n_tokens) {
                const uint2 x = __ldg(reinterpret_cast<const uint2*>(xqs[t] + c * kChunk));
                const float dx = __ldg(xds[t] + c * kChunk / kQ8Block);
#pragma unroll
                for (int r = 0; r < kRows; ++r)
                    acc[r][t] = chunk_dot_q8<T>(w[r], x.x, x.y, dx, acc[r][t]);
            }
        }
    }
}

// x [n_blocks * 32] f32 -> xq int8 [n_blocks * 32] and xd f32 [n_blocks], the 8-bit activations
// of lane_rows_dot_q8 (quantize_q8_kernel in linear.cu, one warp per block), on `stream`.
void launch_quantize_q8(const float* x, int64_t n_blocks, int8_t* xq, float* xd,
                        cudaStream_t stream);

__device__ __forceinline__ float silu(float g) {
    return g / (1.0f + expf(-g));
}

}  // namespace tandem::cuda

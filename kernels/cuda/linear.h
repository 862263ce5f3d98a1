// Dense linear layer on a CUDA device: y = x · wᵀ (+ bias), the semantics of cpu::linear, for
// weights of every weight type (f32, f16, bf16, q8_0, q4_0, q5_0, q4_k, q5_k, q6_k) stored in
// their GGUF layouts (no repacking).
//
// Two paths, chosen per call:
// - n_tokens <= kGemvMaxTokens (decode): a GEMV kernel that reads each weight byte once for all
//   tokens, two output rows per warp (gemv.cuh). Float weights: f32 activations and
//   accumulation. Quantized weights: x quantized first to int8 blocks of 32 with an f32 scale (a
//   small kernel, as the CPU quantizes to Q8_0/Q8_K), then integer dot products by __dp4a per
//   8 values and f32 accumulation (quant_dot.h).
// - more tokens (prefill): the weights dequantized to bf16 in ctx scratch (bf16 weights used in
//   place), x rounded to bf16, and cublasGemmEx with f32 accumulation on tensor cores; f32
//   weights go to cublasSgemm with f32 activations.
// Float weights whose rows are not 16-byte vectors (k % 8 != 0 or an unaligned pointer) take the
// cuBLAS path at any n_tokens. Nothing synchronizes; scratch comes from ctx.
#pragma once
#include <cstdint>

#include "kernels/cuda/context.h"
#include "kernels/tensor.h"

namespace tandem::cuda {

inline constexpr int64_t kGemvMaxTokens = 8;

// x: [n_tokens, k] f32; w: [m, k] of a weight type, contiguous (k a multiple of its block);
// bias: empty or [m] f32/f16/bf16; y: [n_tokens, m] f32, not aliasing x. All on ctx's device.
void linear(Context& ctx, const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& y);

// Throws tandem::Error unless w is a weight matrix the CUDA kernels read: [rows, k] of a weight
// type, contiguous on ctx's device, k in whole blocks, aligned for the kernels' vector loads.
// `what` names it in the message.
void check_weight(const Context& ctx, const Tensor& w, int64_t rows, int64_t k, const char* what);

// Whether linear() takes the GEMV kernel for this weight and number of tokens.
bool uses_gemv(const Tensor& w, int64_t n_tokens);

}  // namespace tandem::cuda

// Dense linear layer on the CPU: y = x · wᵀ (+ bias), as torch.nn.Linear computes it, for weights
// of every weight type (f32, f16, bf16, q8_0, q4_0, q5_0, q4_k, q5_k, q6_k, mxfp4).
//
// Activations are f32 and are converted once per call to the weight type's dot-product partner
// (kernels/cpu/vec_dot.h); then each weight row is read once and dotted with every token, so the
// weights stream from memory once per call whatever the number of tokens. Work is split across
// threads by blocks of output rows. Accumulation is f32 (int32 inside quantized blocks).
#pragma once

#include "kernels/tensor.h"
#include "kernels/thread_pool.h"

namespace tandem::cpu {

// x: [n_tokens, k] f32; w: [m, k] of a weight type (k a multiple of its block size);
// bias: empty or [m] of a float type; y: [n_tokens, m] f32 (may not alias x).
void linear(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& y,
            ThreadPool& pool);

// Widens (or dequantizes) n elements of a row of `dtype` to f32.
void row_to_f32(const void* row, DType dtype, int64_t n, float* out);

// Dot product of two f32 vectors of length n, with the active ISA's kernel.
float dot_f32(const float* a, const float* b, int64_t n);

}  // namespace tandem::cpu

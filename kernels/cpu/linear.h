// Dense linear layer on the CPU: y = x · wᵀ (+ bias), as torch.nn.Linear computes it.
//
// Activations are f32; the weight is read in its stored type (f32, f16 or bf16) and widened to
// f32 one row at a time, so each weight row is read from memory once per call whatever the
// number of tokens. Accumulation is f32. This is the plain reference-quality kernel; the
// bandwidth-bound kernels for quantized types replace it behind the same signature.
#pragma once

#include "kernels/tensor.h"
#include "kernels/thread_pool.h"

namespace tandem::cpu {

// x: [n_tokens, k] f32; w: [m, k] f32|f16|bf16; bias: empty or [m] of any float type;
// y: [n_tokens, m] f32 (may not alias x).
void linear(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& y,
            ThreadPool& pool);

// Widens n elements of a float-typed row to f32.
void row_to_f32(const void* row, DType dtype, int64_t n, float* out);

// Dot product of two f32 vectors of length n.
float dot_f32(const float* a, const float* b, int64_t n);
// Dot product of a bf16 vector and an f32 vector of length n.
float dot_bf16_f32(const uint16_t* w, const float* x, int64_t n);

}  // namespace tandem::cpu

// Small device ops that glue a forward step together on a CUDA device: zeroing accumulators,
// clamping projections (clip_qkv), gathering the rows that need logits, and adding a shared
// expert's output with its optional sigmoid gate. Each is one launch on the context's stream.
//
// Tensors are f32 and contiguous, in device memory. Only CUDA builds define these.
#pragma once
#include <cstdint>
#include <span>

#include "kernels/cuda/context.h"
#include "kernels/tensor.h"

namespace tandem::cuda {

// t = 0.
void zero(Context& ctx, const Tensor& t);

// t = clamp(t, -limit, limit), in place.
void clamp(Context& ctx, const Tensor& t, float limit);

// dst[i] = src[rows[i]]: src [n_src, dim], dst [rows.size(), dim]; rows are host indices.
void gather_rows(Context& ctx, const Tensor& src, std::span<const int64_t> rows, const Tensor& dst);

// out[t] += g(t) * shared[t] for every row t, where g(t) = sigmoid(gate_logits[t]) when
// gate_logits is given ([n_tokens, 1] or [n_tokens]) and 1 when it is empty.
// out, shared: [n_tokens, dim].
void add_gated_rows(Context& ctx, const Tensor& out, const Tensor& shared,
                    const Tensor& gate_logits);

}  // namespace tandem::cuda

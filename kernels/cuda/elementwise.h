// Row-wise and elementwise ops of the decoder on a CUDA device: RMSNorm (also per head, for q/k
// norm), SwiGLU's silu(gate) * up, residual adds and embedding lookups. Activations are f32
// [n_rows, dim] device tensors; weights and embedding tables may be f32, f16 or bf16 and are read
// in their stored type. The same arithmetic as kernels/cpu/{norm,activation}.h, except that the
// sum of squares of RMSNorm is a tree over the block (the CPU's order differs: ~1e-7 relative).
//
// Each op launches on ctx's stream and returns without synchronizing. Plain C++ header.
#pragma once

#include <cstdint>
#include <span>

#include "kernels/cuda/context.h"
#include "kernels/tensor.h"

namespace tandem::cuda {

// out = x / sqrt(mean(x²) + eps) * weight, per row. x, out: [n_rows, dim] f32 (out may alias
// x); weight: [dim] f32, f16 or bf16. For q/k norm per head, pass [n_tokens * n_heads, head_dim].
void rms_norm(Context& ctx, const Tensor& x, const Tensor& weight, float eps, const Tensor& out);

// out = silu(gate) * up; all f32 of one shape (out may alias gate or up).
void silu_mul(Context& ctx, const Tensor& gate, const Tensor& up, const Tensor& out);

// out = a + b; all f32 of one shape (out may alias either), for residual connections.
void add(Context& ctx, const Tensor& a, const Tensor& b, const Tensor& out);

// out[i] = table[tokens[i]] as f32. table: [vocab, hidden_dim] f32, f16 or bf16 (quantized
// tables are refused for now); tokens: host ids, each checked against vocab; out:
// [tokens.size(), hidden_dim] f32.
void embed(Context& ctx, const Tensor& table, std::span<const int32_t> tokens, const Tensor& out);

}  // namespace tandem::cuda

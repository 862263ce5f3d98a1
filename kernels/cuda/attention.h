// Causal grouped-query attention over a paged KV cache on a CUDA device, the semantics of
// kernels/cpu/attention.h (same arguments, with device memory), and the KV cache writes that
// feed it.
//
// One kernel serves prefill and decode: a block takes a tile of up to 32 query rows (positions x
// the query heads of one KV head, so each KV chunk is read once for all of them, GQA-aware) and
// walks a range of keys in chunks of 32 through shared memory with an online softmax in f32.
// When the tiles alone would not fill the GPU (decode: one position per sequence), each tile's
// key range is split across blocks (flash-decoding): every split writes a partial (max, sum,
// output) per row and a second small kernel combines them. All sequences of a call go into one
// launch of each kernel (their arguments uploaded as one table).
//
// Limits: head_dim and v_head_dim up to 256; f32, f16 or bf16 KV rows; f32 queries and outputs.
// Multi-head latent attention (DeepSeek's MLA) is not covered here yet. The score arithmetic is
// f32 on CUDA cores (no tensor cores yet), so results match the CPU to ~1e-6, not bit for bit.
#pragma once

#include <cstdint>
#include <span>

#include "kernels/cuda/context.h"
#include "kernels/kv_rows.h"
#include "kernels/tensor.h"

namespace tandem::cuda {

struct AttentionArgs {
    Tensor q;               // [n_new, n_heads, head_dim] f32 device tensor, after RoPE
    KvRows k_cache;         // rows of n_kv_heads x head_dim; base and block_table in device memory
    KvRows v_cache;         // rows of n_kv_heads x v_head_dim, the same blocks
    Tensor out;             // [n_new, n_heads, v_head_dim] f32 device tensor
    int64_t start_pos = 0;  // position of the first new token; its keys are in the cache
    float scale = 1.0f;     // usually 1 / sqrt(head_dim)
    int64_t sliding_window = 0;  // 0: full causal attention; else keys within the last W positions
};

void attention(Context& ctx, std::span<const AttentionArgs> sequences);

// Stores src [n, n_heads * head_dim] f32 (device) at positions [start, start + n) of `rows`,
// converted to rows.dtype with the bits of cache/kv_cache.h's write_rows (bf16 and f16 round to
// nearest even).
void write_kv(Context& ctx, const KvRows& rows, int64_t start, const Tensor& src);

}  // namespace tandem::cuda

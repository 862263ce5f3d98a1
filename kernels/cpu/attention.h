// Causal grouped-query attention over a paged KV cache on the CPU: blocked prefill and
// GQA-aware decode in one kernel (attention_tile.h).
//
// The new tokens' keys and values must already be in the cache at rows
// [start_pos, start_pos + n_new). Query head h reads KV head h / (n_heads / n_kv_heads), as
// Hugging Face's repeat_kv does. The cache rows may be f32, f16 or bf16; they are read in their
// stored type and converted to f32 a chunk of keys at a time. Scores, softmax (online, with a
// running max) and the weighted sum of values are f32. Sinks, when given, add exp(sink - max) to
// each row's denominator at the end.
//
// Work: each sequence is cut into tiles of up to about 64 query rows (positions x the query
// heads of one KV head); a tile walks the keys once, chunk by chunk, so a chunk of keys and
// values is read once per tile and stays in L1 while every row of the tile uses it. A decode
// token is a tile of the query heads of one KV head. Tiles of all sequences run as one pool job.
// A row's result does not depend on the tiling, so prefill chunks of any size, token-by-token
// decode and any batch give the same bits.
#pragma once

#include <cstdint>
#include <span>

#include "kernels/kv_rows.h"
#include "kernels/tensor.h"
#include "kernels/thread_pool.h"

namespace tandem::cpu {

struct AttentionArgs {
    Tensor q;                    // [n_new, n_heads, head_dim] f32, after RoPE
    KvRows k_cache;              // rows of n_kv_heads x head_dim, paged or contiguous
    KvRows v_cache;              // rows of n_kv_heads x v_head_dim
    Tensor out;                  // [n_new, n_heads, v_head_dim] f32
    int64_t start_pos = 0;       // position of the first new token
    float scale = 1.0f;          // usually 1 / sqrt(head_dim)
    int64_t sliding_window = 0;  // 0: full causal attention; else keys within the last W positions
    // [n_heads] f32 or null: per head, a logit that joins the softmax's denominator without a
    // value (gpt-oss's attention sinks), in the units of the scaled scores.
    const float* sinks = nullptr;
};

void attention(const AttentionArgs& args, ThreadPool& pool);
// The sequences of one step together, so that many short decodes still fill the pool.
void attention(std::span<const AttentionArgs> sequences, ThreadPool& pool);

}  // namespace tandem::cpu

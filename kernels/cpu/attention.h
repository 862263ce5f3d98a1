// Causal grouped-query attention of one sequence on the CPU, over its KV cache.
//
// The new tokens' keys and values must already be in the cache at rows
// [start_pos, start_pos + n_new). Query head h reads KV head h / (n_heads / n_kv_heads), as
// Hugging Face's repeat_kv does. Scores and softmax are f32, with the running-max form of
// softmax so no score row is materialised beyond the context length.
#pragma once

#include <cstdint>

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
};

void attention(const AttentionArgs& args, ThreadPool& pool);

}  // namespace tandem::cpu

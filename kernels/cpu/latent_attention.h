// Causal multi-head latent attention (DeepSeek's MLA) of one sequence over its latent cache, in
// the absorbed form: every head attends to the same single-head cache row
//   [k_rope (rope_dim) | latent (latent_dim)]
// with a query already multiplied into latent space, and its output stays in latent space:
//   score(h, j) = scale * q[h] · cache[j]          (rotary and latent parts at once)
//   out[h]      = sum_j softmax_j(score) * cache[j][rope_dim:]
// The caller turns q_nope into latent space with W_UK and the output back with W_UV (see
// models/blocks/mla_attention_block.h). New rows must already be in the cache at
// [start_pos, start_pos + n_new). This is grouped-query attention with one KV head whose values
// are the keys' latent part, so it runs on the tiles of kernels/cpu/attention.h: cache rows in
// f32, f16 or bf16, blocked prefill, every head of a decode token in one pass over the rows,
// and the same bits whatever the batch.
#pragma once

#include <cstdint>

#include "kernels/kv_rows.h"
#include "kernels/tensor.h"
#include "kernels/thread_pool.h"

namespace tandem::cpu {

struct LatentAttentionArgs {
    Tensor q;              // [n_new, n_heads, rope_dim + latent_dim] f32, rotary part first
    KvRows cache;          // rows of 1 x (rope_dim + latent_dim), rotary part first
    Tensor out;            // [n_new, n_heads, latent_dim] f32
    int64_t rope_dim = 0;  // the values are the cache rows past rope_dim
    int64_t start_pos = 0;
    float scale = 1.0f;
};

void latent_attention(const LatentAttentionArgs& args, ThreadPool& pool);

}  // namespace tandem::cpu

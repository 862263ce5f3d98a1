// Causal multi-head latent attention (DeepSeek's MLA, absorbed form) on a CUDA device: the
// semantics of kernels/cpu/latent_attention.h with device memory. Every head attends to the same
// single-head cache row [k_rope (rope_dim) | latent (latent_dim)] with a query already in latent
// space, and its output stays in latent space:
//   score(h, j) = scale * q[h] · cache[j]          (rotary and latent parts at once)
//   out[h]      = sum_j softmax_j(score) * cache[j][rope_dim:]
//
// One kernel for decode and prefill: a block of 8 warps takes 8 heads of one query token (they
// share the token's causal range, so one pass over the keys serves all 8), stages chunks of 8
// cache rows in shared memory as f32 and keeps an online softmax per warp; when there are too
// few blocks to fill the GPU (decode of a long context) the key range is split
// (flash-decoding) and a combine kernel merges the splits' partial rows (attention_math.h).
// f32 arithmetic throughout: the CPU kernel's results to ~1e-6 relative.
//
// Limits: rope_dim + latent_dim <= kLatentMaxRow (768; DeepSeek-V2/V3 use 64 + 512); f32, f16
// or bf16 cache rows; f32 queries and outputs. Not capture-safe: it uploads its tables.
#pragma once

#include <cstdint>
#include <span>

#include "kernels/cuda/context.h"
#include "kernels/cuda/host_device.h"
#include "kernels/kv_rows.h"
#include "kernels/tensor.h"

namespace tandem::cuda {

inline constexpr int64_t kLatentMaxRow = 768;
inline constexpr int kLatentHeadsPerBlock = 8;  // one warp per head
inline constexpr int kLatentChunkKeys = 8;      // cache rows staged in shared memory at a time

struct LatentAttentionArgs {
    Tensor q;      // [n_new, n_heads, rope_dim + latent_dim] f32 device tensor, rotary first
    KvRows cache;  // rows of 1 x (rope_dim + latent_dim); base and block_table on device
    Tensor out;    // [n_new, n_heads, latent_dim] f32 device tensor
    int64_t rope_dim = 0;   // the values are the cache rows past rope_dim
    int64_t start_pos = 0;  // position of the first new token; its row is in the cache
    float scale = 1.0f;
};

// How many splits of the key range each (token, 8 heads) block gets: 1 when `blocks` already
// fill the GPU (two blocks per multiprocessor) or the longest range is short, else enough to fill
// it with at least kLatentMinSplitKeys keys per split. The CPU twin test checks the bounds.
inline constexpr int64_t kLatentMinSplitKeys = 128;
TANDEM_HD int64_t latent_splits(int64_t blocks, int64_t max_keys, int64_t multiprocessors) {
    const int64_t want = 2 * multiprocessors;
    if (blocks <= 0 || blocks >= want) return 1;
    const int64_t by_blocks = (want + blocks - 1) / blocks;
    const int64_t by_keys = (max_keys + kLatentMinSplitKeys - 1) / kLatentMinSplitKeys;
    const int64_t splits = by_blocks < by_keys ? by_blocks : by_keys;
    return splits > 1 ? splits : 1;
}

// Keys per split for `splits` splits of `max_keys`, a whole number of shared-memory chunks.
TANDEM_HD int64_t latent_split_keys(int64_t max_keys, int64_t splits) {
    const int64_t per = (max_keys + splits - 1) / splits;
    return (per + kLatentChunkKeys - 1) / kLatentChunkKeys * kLatentChunkKeys;
}

// Throws tandem::Error naming the sequence and argument for anything the kernel cannot take.
void latent_attention(Context& ctx, std::span<const LatentAttentionArgs> sequences);

}  // namespace tandem::cuda

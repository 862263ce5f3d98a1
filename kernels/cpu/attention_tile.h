// The unit of work of the CPU attention kernels (attention.h, latent_attention.h): one tile of
// query rows that share one KV head, against that head's cached keys and values. Compiled per
// instruction set by attention_{scalar,avx2,avx512}.cpp (attention_impl.inc); attention.cpp cuts
// a step's sequences into tiles and hands them to the thread pool.
//
// A tile is n_pos consecutive positions x n_heads adjacent query heads. Keys are visited in
// chunks of kKeyChunk positions aligned to position 0, and every row keeps its own running max,
// sum and output (online softmax, f32). A score is the dot product of a query row with a key
// row, vectorised along head_dim and summed by a fixed tree; the weighted values are added row by
// row. A row's arithmetic therefore depends only on its query, its position and the cache, never
// on which other rows share its tile: prefill in any chunking and token-by-token decode (a tile
// of one token's query heads of one KV head) give the same bits, which batch invariance relies
// on. (Bits may differ between instruction sets, whose vector widths differ.)
#pragma once

#include <cstdint>
#include <span>

#include "kernels/cpu/cpu_isa.h"
#include "kernels/kv_rows.h"
#include "kernels/thread_pool.h"

namespace tandem::cpu {

inline constexpr int64_t kKeyChunk = 16;

// Elements [offset, offset + dim) of head `head` at every position: one KV head's keys or values
// (for latent attention, the rope and latent parts of the one latent row).
struct KvSlice {
    KvRows rows;
    int64_t head = 0;
    int64_t offset = 0;
    int64_t dim = 0;
};

struct AttentionTile {
    const float* q = nullptr;  // row (first_pos, first head); heads k.dim apart
    float* out = nullptr;      // same row of the output; heads v.dim apart
    int64_t q_pos_stride = 0;  // floats between the rows of consecutive positions in q
    int64_t out_pos_stride = 0;
    int64_t first_pos = 0;  // position of the tile's first query
    int64_t n_pos = 0;
    int64_t n_heads = 0;  // query heads per position in the tile, all reading k and v
    KvSlice k, v;
    float q_scale = 1.0f;          // softmax scale x log2(e): scores are kept in base 2
    int64_t window = 0;            // 0: full causal; else keys within the last `window` positions
    const float* sinks = nullptr;  // [n_heads] of the tile (natural-log units), or null
};

// Where a tile's working set lies in its caller-provided scratch, in floats from the start (each
// 64-byte aligned): scaled queries, unnormalised outputs, running max and sum per row, the
// chunk's transposed keys (tiles of many rows) and its keys and values converted to f32.
struct AttentionScratch {
    int64_t q, o, max, sum, kt, keys, values, total;
};

// always_inline: used by the per-ISA files too (see kernels/dtype.h).
[[gnu::always_inline]] inline AttentionScratch attention_scratch_layout(const AttentionTile& t) {
    const int64_t rows = t.n_pos * t.n_heads;
    const int64_t sizes[] = {
        rows * t.k.dim,      rows * t.v.dim,     rows, rows, t.k.dim * kKeyChunk,
        t.k.dim * kKeyChunk, t.v.dim * kKeyChunk};
    int64_t offsets[8] = {};
    for (int i = 0; i < 7; ++i)
        offsets[i + 1] = offsets[i] + (sizes[i] + 15) / 16 * 16;
    return {offsets[0], offsets[1], offsets[2], offsets[3],
            offsets[4], offsets[5], offsets[6], offsets[7]};
}

struct AttentionKernels {
    CpuIsa isa;
    // `scratch`: attention_scratch_layout(tile).total floats, 64-byte aligned, owned by the caller.
    void (*tile)(const AttentionTile& tile, float* scratch);
};

const AttentionKernels& attention_kernels_for(CpuIsa isa);

// One sequence's attention before it is cut into tiles: q [n_new, n_heads, k.dim] and
// out [n_new, n_heads, v.dim]; query head h reads KV head kv = h / (n_heads / n_kv_heads), i.e.
// the slices k and v with head kv.
struct AttentionProblem {
    const float* q = nullptr;
    float* out = nullptr;
    int64_t n_new = 0, n_heads = 0, n_kv_heads = 0;
    KvSlice k, v;  // head ignored
    int64_t start_pos = 0;
    float scale = 1.0f;
    int64_t window = 0;
    const float* sinks = nullptr;  // [n_heads] or null
};

// Tiles every problem and runs the tiles on the pool with the active ISA's kernel.
void run_attention(std::span<const AttentionProblem> problems, ThreadPool& pool);

}  // namespace tandem::cpu

// How the CUDA attention kernel (attention.cu) cuts one call's sequences into blocks: tiles of up
// to kWarps x rows_per_warp query rows (positions x the query heads of one KV head), the key
// range of each, and where the GPU would otherwise idle (decode), splits of those key ranges
// whose partial results a combine kernel merges. Plain C++ compiled in every build, so that the
// CPU twin test runs the kernel's algorithm over this very plan (tests/unit/
// test_cuda_math_twins.cpp) without a GPU.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace tandem::cuda {

inline constexpr int kAttentionWarps = 4;
inline constexpr int kAttentionChunk = 32;        // keys per chunk: one per lane
inline constexpr int64_t kAttentionMaxDim = 256;  // head_dim and v_head_dim
// Shared memory a block may use: under the 99 KiB of sm_86/sm_89/sm_120, so every target runs it.
inline constexpr size_t kAttentionSharedBudget = 96 * 1024;
// Keys per split at least, so a split's fixed cost (loading queries, combining) stays small.
inline constexpr int64_t kAttentionMinSplitKeys = 256;

// The shape of one sequence's attention in a call.
struct AttentionShape {
    int64_t n_new = 0, n_heads = 0, n_kv_heads = 0, head_dim = 0, v_dim = 0;
    int64_t start_pos = 0, window = 0;
};

// One block's work: rows r = (position t0 + r / n_heads, head head0 + r % n_heads) of sequence
// seq, keys [key_begin, key_end). partial < 0: the block writes the output; else row r's partial
// result goes to partial row partial + r.
struct AttentionTile {
    int32_t seq, kv_head, head0, n_heads;
    int64_t t0, n_pos, key_begin, key_end;
    int64_t partial;
};

// The n_splits tiles of one split tile, for the combine kernel: split s of row r is partial row
// partial + s * rows + r.
struct AttentionSplitGroup {
    int32_t seq, head0, n_heads, n_splits;
    int64_t t0, n_pos, partial;
};

// Shared memory of a block, in floats: scaled queries [kWarps x rows_per_warp, qs], a chunk of
// keys [kChunk, qs] and of values [kChunk, vs], each warp's probabilities [rows_per_warp, kChunk].
// qs = 4 x an odd number >= head_dim: lanes reading 32 different keys as float4 hit distinct
// banks.
struct AttentionSharedLayout {
    int64_t qs, vs;
    int64_t q, k, v, p, floats;
};

AttentionSharedLayout attention_shared_layout(int rows_per_warp, int64_t head_dim, int64_t v_dim);

struct AttentionPlan {
    int rows_per_warp = 1;
    AttentionSharedLayout layout{};
    int64_t max_v_dim = 0;
    std::vector<AttentionTile> tiles;  // longest first
    std::vector<AttentionSplitGroup> groups;
    int64_t n_partials = 0;  // partial rows, each 2 + max_v_dim floats
};

// `multiprocessors`: of the device; the plan splits key ranges until about 4 blocks per SM.
AttentionPlan plan_attention(std::span<const AttentionShape> sequences, int multiprocessors);

// The decode kernel (attention_decode.cu): one block of kDecodeWarps warps per (sequence, KV head,
// tile of up to 8 of its query heads, split of the key range). A block keeps its split's scores
// in shared memory [8, kDecodeMaxSplitKeys], so a split holds at most that many keys.
inline constexpr int kDecodeWarps = 4;
inline constexpr int kDecodeMaxGroup = 8;  // query heads per block
inline constexpr int64_t kDecodeMaxSplitKeys = 1024;
// Keys per split at least: below this a block's fixed cost (query load, combine) dominates.
inline constexpr int64_t kDecodeMinSplitKeys = 64;
// Elements each lane loads per row: 16 bytes of a 16-bit cache, 32 of an f32 one.
inline constexpr int64_t kDecodeLaneElements = 8;

struct DecodePlan {
    int group_tile = 1;      // query heads per block: 1, 2, 4 or 8 (the kernel's template)
    int head_tiles = 1;      // blocks per KV head: ceil(group / group_tile)
    int k_lanes = 1;         // lanes per key row: a power of two >= head_dim / 8, at most 32
    int v_lanes = 1;         // lanes per value row
    int n_splits = 1;        // blocks per (sequence, head tile); 1: the block writes the output
    int64_t split_keys = 0;  // keys per split, a multiple of 32, <= kDecodeMaxSplitKeys
};

// Whether the decode kernel takes these dimensions: head_dim and v_dim multiples of 8 up to 256.
bool decode_dims_supported(int64_t head_dim, int64_t v_dim);

// batch sequences of n_kv_heads x group query heads, each attending to at most max_keys keys.
// Splits fill about 8 blocks per SM where the keys allow it (kDecodeMinSplitKeys per split) and
// always keep a split within kDecodeMaxSplitKeys.
DecodePlan plan_decode(int64_t batch, int64_t n_kv_heads, int64_t group, int64_t head_dim,
                       int64_t v_dim, int64_t max_keys, int multiprocessors);

// The prefill kernel (attention_prefill.cu, tensor cores): tiles of up to kPrefillRows query rows
// (positions x query heads of one KV head), each over its whole key range, no splits.
inline constexpr int kPrefillRows = 64;
inline constexpr int kPrefillKeys = 64;         // keys per chunk through shared memory
inline constexpr int64_t kPrefillMaxDim = 128;  // head_dim and v_dim, multiples of 16

// Tiles longest first (partial = -1 in each).
std::vector<AttentionTile> plan_prefill(std::span<const AttentionShape> sequences);

}  // namespace tandem::cuda

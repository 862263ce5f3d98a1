// plan_attention (attention_plan.h): plain C++ so that the CPU twin test runs the same plan.
#include "kernels/cuda/attention_plan.h"

#include <algorithm>

namespace tandem::cuda {

AttentionSharedLayout attention_shared_layout(int rows_per_warp, int64_t head_dim, int64_t v_dim) {
    int64_t quads = (head_dim + 3) / 4;
    if (quads % 2 == 0) ++quads;
    AttentionSharedLayout l{};
    l.qs = quads * 4;
    l.vs = (v_dim + 3) / 4 * 4;
    l.q = 0;
    l.k = l.q + kAttentionWarps * rows_per_warp * l.qs;
    l.v = l.k + kAttentionChunk * l.qs;
    l.p = l.v + kAttentionChunk * l.vs;
    l.floats = l.p + kAttentionWarps * rows_per_warp * kAttentionChunk;
    return l;
}

AttentionPlan plan_attention(std::span<const AttentionShape> sequences, int multiprocessors) {
    AttentionPlan plan;
    int64_t max_dim = 1, max_v_dim = 1, max_rows = 1;
    for (const AttentionShape& s : sequences) {
        max_dim = std::max(max_dim, s.head_dim);
        max_v_dim = std::max(max_v_dim, s.v_dim);
        max_rows = std::max(max_rows, s.n_new * (s.n_heads / s.n_kv_heads));
    }
    // Rows per warp: enough for the largest tile, as shared memory allows.
    int rows_per_warp = 1;
    while (rows_per_warp < 8 && kAttentionWarps * rows_per_warp < max_rows &&
           size_t(attention_shared_layout(rows_per_warp * 2, max_dim, max_v_dim).floats) *
                   sizeof(float) <=
               kAttentionSharedBudget)
        rows_per_warp *= 2;
    plan.rows_per_warp = rows_per_warp;
    plan.layout = attention_shared_layout(rows_per_warp, max_dim, max_v_dim);
    plan.max_v_dim = max_v_dim;
    const int64_t tile_rows = kAttentionWarps * rows_per_warp;

    std::vector<AttentionTile> tiles;
    for (size_t i = 0; i < sequences.size(); ++i) {
        const AttentionShape& s = sequences[i];
        const int64_t group = s.n_heads / s.n_kv_heads;
        const int64_t heads = std::min(group, tile_rows), positions = tile_rows / heads;
        for (int64_t kv = 0; kv < s.n_kv_heads; ++kv)
            for (int64_t h0 = kv * group; h0 < (kv + 1) * group; h0 += heads)
                for (int64_t t0 = 0; t0 < s.n_new; t0 += positions) {
                    const int64_t n_pos = std::min(positions, s.n_new - t0);
                    const int64_t first = s.start_pos + t0;
                    tiles.push_back(
                        {.seq = int32_t(i),
                         .kv_head = int32_t(kv),
                         .head0 = int32_t(h0),
                         .n_heads = int32_t(std::min(heads, (kv + 1) * group - h0)),
                         .t0 = t0,
                         .n_pos = n_pos,
                         .key_begin = s.window > 0 ? std::max<int64_t>(0, first - s.window + 1) : 0,
                         .key_end = first + n_pos,
                         .partial = -1});
                }
    }
    if (tiles.empty()) return plan;

    // Split the key ranges when the tiles alone would leave the GPU idle (decode, small batches).
    const int64_t wanted = 4 * int64_t(multiprocessors);
    const int64_t splits_wanted = (wanted + int64_t(tiles.size()) - 1) / int64_t(tiles.size());
    for (const AttentionTile& t : tiles) {
        const int64_t keys = t.key_end - t.key_begin;
        const int64_t splits =
            std::min(splits_wanted, (keys + kAttentionMinSplitKeys - 1) / kAttentionMinSplitKeys);
        if (splits <= 1) {
            plan.tiles.push_back(t);
            continue;
        }
        // Split lengths in whole chunks.
        const int64_t chunks = (keys + kAttentionChunk - 1) / kAttentionChunk;
        const int64_t per_split = (chunks + splits - 1) / splits * kAttentionChunk;
        const int64_t rows = t.n_pos * t.n_heads;
        int32_t n_splits = 0;
        for (int64_t begin = t.key_begin; begin < t.key_end; begin += per_split, ++n_splits) {
            AttentionTile part = t;
            part.key_begin = begin;
            part.key_end = std::min(t.key_end, begin + per_split);
            part.partial = plan.n_partials + n_splits * rows;
            plan.tiles.push_back(part);
        }
        plan.groups.push_back({.seq = t.seq,
                               .head0 = t.head0,
                               .n_heads = t.n_heads,
                               .n_splits = n_splits,
                               .t0 = t.t0,
                               .n_pos = t.n_pos,
                               .partial = plan.n_partials});
        plan.n_partials += n_splits * rows;
    }
    // Longest first, so the blocks that start last are short ones (balance, not results).
    std::stable_sort(
        plan.tiles.begin(), plan.tiles.end(), [](const AttentionTile& a, const AttentionTile& b) {
            return (a.key_end - a.key_begin) * a.n_pos > (b.key_end - b.key_begin) * b.n_pos;
        });
    return plan;
}

std::vector<AttentionTile> plan_prefill(std::span<const AttentionShape> sequences) {
    std::vector<AttentionTile> tiles;
    for (size_t i = 0; i < sequences.size(); ++i) {
        const AttentionShape& s = sequences[i];
        const int64_t group = s.n_heads / s.n_kv_heads;
        const int64_t heads = std::min<int64_t>(group, kPrefillRows);
        const int64_t positions = kPrefillRows / heads;
        for (int64_t kv = 0; kv < s.n_kv_heads; ++kv)
            for (int64_t h0 = kv * group; h0 < (kv + 1) * group; h0 += heads)
                for (int64_t t0 = 0; t0 < s.n_new; t0 += positions) {
                    const int64_t n_pos = std::min(positions, s.n_new - t0);
                    const int64_t first = s.start_pos + t0;
                    tiles.push_back(
                        {.seq = int32_t(i),
                         .kv_head = int32_t(kv),
                         .head0 = int32_t(h0),
                         .n_heads = int32_t(std::min(heads, (kv + 1) * group - h0)),
                         .t0 = t0,
                         .n_pos = n_pos,
                         .key_begin = s.window > 0 ? std::max<int64_t>(0, first - s.window + 1) : 0,
                         .key_end = first + n_pos,
                         .partial = -1});
                }
    }
    std::stable_sort(tiles.begin(), tiles.end(),
                     [](const AttentionTile& a, const AttentionTile& b) {
                         return a.key_end - a.key_begin > b.key_end - b.key_begin;
                     });
    return tiles;
}

bool decode_dims_supported(int64_t head_dim, int64_t v_dim) {
    const auto ok = [](int64_t d) {
        return d > 0 && d <= kAttentionMaxDim && d % kDecodeLaneElements == 0;
    };
    return ok(head_dim) && ok(v_dim);
}

namespace {

int lanes_for(int64_t dim) {
    int lanes = 1;
    while (lanes < 32 && lanes * kDecodeLaneElements < dim)
        lanes *= 2;
    return lanes;
}

}  // namespace

DecodePlan plan_decode(int64_t batch, int64_t n_kv_heads, int64_t group, int64_t head_dim,
                       int64_t v_dim, int64_t max_keys, int multiprocessors) {
    DecodePlan plan;
    plan.group_tile = group <= 1 ? 1 : group <= 2 ? 2 : group <= 4 ? 4 : kDecodeMaxGroup;
    plan.head_tiles = int((group + plan.group_tile - 1) / plan.group_tile);
    plan.k_lanes = lanes_for(head_dim);
    plan.v_lanes = lanes_for(v_dim);
    max_keys = std::max<int64_t>(max_keys, 1);
    const int64_t blocks = std::max<int64_t>(1, batch * n_kv_heads * plan.head_tiles);
    const int64_t to_fill = (8 * int64_t(multiprocessors) + blocks - 1) / blocks;
    const int64_t at_most = (max_keys + kDecodeMinSplitKeys - 1) / kDecodeMinSplitKeys;
    const int64_t at_least = (max_keys + kDecodeMaxSplitKeys - 1) / kDecodeMaxSplitKeys;
    const int64_t splits = std::max(at_least, std::min(to_fill, at_most));
    // Whole warps' worth of keys per split; then as few splits as those lengths need.
    plan.split_keys = ((max_keys + splits - 1) / splits + 31) / 32 * 32;
    plan.n_splits = int((max_keys + plan.split_keys - 1) / plan.split_keys);
    return plan;
}

}  // namespace tandem::cuda

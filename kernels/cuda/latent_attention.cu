// latent_attention() (latent_attention.h): absorbed MLA over the paged latent cache.
//
// latent_kernel: block (tile, split); a tile is 8 heads of one query token, one warp per head.
// Each lane holds its head's scaled query elements lane, lane + 32, ... in registers (scale x
// log2 e: scores in base 2, as every attention kernel here). Per chunk of 8 keys the block stages
// the cache rows in shared memory as f32 (one pass over the cache for 8 heads), each warp scores
// the 8 keys (lane partial sums added by xor shuffles), updates its online softmax and
// accumulates the latent dims lane, lane + 32, ... of its output. One split: the block divides
// and writes the output; several: a partial row (max, sum, unnormalised output) per head and
// split, merged by combine_kernel with attention_math.h's combine_partials.
#include "kernels/cuda/latent_attention.h"

#include <algorithm>
#include <cstring>
#include <numbers>
#include <vector>

#include "kernels/cuda/attention_math.h"
#include "kernels/cuda/attention_prefill.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/tensor_checks.h"

namespace tandem::cuda {

namespace {

constexpr int kHeads = kLatentHeadsPerBlock;
constexpr int kThreads = kHeads * 32;
constexpr int kChunk = kLatentChunkKeys;
constexpr int kPerLane = int(kLatentMaxRow / 32);  // row elements a lane holds

struct LatentSequence {
    const float* q;  // [n_new, n_heads, row]
    float* out;      // [n_new, n_heads, latent_dim]
    KvView cache;
    int64_t n_heads, start_pos;
    int64_t first_row;  // this sequence's first query row among all sequences' (for partials)
};

struct LatentTile {
    int32_t sequence, token, head0, reserved;
};

struct LatentParams {
    const LatentSequence* sequences;
    const LatentTile* tiles;
    int row, rope_dim, latent_dim;
    int64_t splits, split_keys;
    float q_scale;    // scale x log2(e)
    float* partials;  // [all query rows, splits, 2 + latent_dim] when splits > 1
};

__global__ __launch_bounds__(kThreads) void latent_kernel(LatentParams p) {
    extern __shared__ float keys[];  // [kChunk, row]
    const int warp = int(threadIdx.x) / 32, lane = int(threadIdx.x) % 32;
    const LatentTile tile = p.tiles[blockIdx.x];
    const LatentSequence s = p.sequences[tile.sequence];
    const int row = p.row;
    const int64_t head = tile.head0 + warp;
    const bool active = head < s.n_heads;
    const int64_t query_row = tile.token * s.n_heads + head;
    const int64_t position = s.start_pos + tile.token;
    const KeyRange range = p.splits > 1
                               ? decode_split_range(position, 0, int64_t(blockIdx.y), p.split_keys)
                               : KeyRange{0, position + 1};

    float q[kPerLane];
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
        const int d = lane + 32 * i;
        q[i] = active && d < row ? s.q[query_row * row + d] * p.q_scale : 0.0f;
    }
    float m = -INFINITY, l = 0.0f;
    float acc[kPerLane];
#pragma unroll
    for (int i = 0; i < kPerLane; ++i)
        acc[i] = 0.0f;

    for (int64_t k0 = range.begin; k0 < range.end; k0 += kChunk) {
        const int n_keys = int(min(int64_t(kChunk), range.end - k0));
        __syncthreads();  // every warp is done with the last chunk
        for (int i = int(threadIdx.x); i < n_keys * row; i += kThreads) {
            const int j = i / row, d = i % row;
            keys[i] = load_float(s.cache.base, s.cache.kind, kv_element(s.cache, k0 + j, 0) + d);
        }
        __syncthreads();
        if (!active) continue;  // the warp still meets every barrier
        float score[kChunk];
        float chunk_max = -INFINITY;
#pragma unroll
        for (int j = 0; j < kChunk; ++j) {
            float sum = 0.0f;
            if (j < n_keys) {
#pragma unroll
                for (int i = 0; i < kPerLane; ++i) {
                    const int d = lane + 32 * i;
                    if (d < row) sum += q[i] * keys[j * row + d];
                }
            }
            for (int offset = 16; offset > 0; offset /= 2)
                sum += __shfl_xor_sync(0xffffffffu, sum, offset);
            score[j] = j < n_keys ? sum : -INFINITY;
            chunk_max = fmaxf(chunk_max, score[j]);
        }
        const float m_new = fmaxf(m, chunk_max);
        const float rescale = softmax_rescale(m, m_new);
        l *= rescale;
#pragma unroll
        for (int j = 0; j < kChunk; ++j) {
            score[j] = j < n_keys ? exp2f(score[j] - m_new) : 0.0f;
            l += score[j];
        }
#pragma unroll
        for (int i = 0; i < kPerLane; ++i) {
            const int d = lane + 32 * i;
            if (d >= p.latent_dim) break;
            float a = acc[i] * rescale;
#pragma unroll
            for (int j = 0; j < kChunk; ++j)
                if (j < n_keys) a += score[j] * keys[j * row + p.rope_dim + d];
            acc[i] = a;
        }
        m = m_new;
    }
    if (!active) return;
    if (p.splits == 1) {
        float* out = s.out + query_row * p.latent_dim;
#pragma unroll
        for (int i = 0; i < kPerLane; ++i) {
            const int d = lane + 32 * i;
            if (d < p.latent_dim) out[d] = acc[i] / l;
        }
        return;
    }
    const int64_t stride = 2 + p.latent_dim;
    float* partial = p.partials + ((s.first_row + query_row) * p.splits + blockIdx.y) * stride;
    if (lane == 0) {
        partial[PartialRow::kMax] = m;
        partial[PartialRow::kSum] = l;
    }
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
        const int d = lane + 32 * i;
        if (d < p.latent_dim) partial[PartialRow::kAcc + d] = acc[i];
    }
}

// One block per tile, one warp per head: merges the head's splits into its output row.
__global__ __launch_bounds__(kThreads) void combine_kernel(LatentParams p) {
    const int warp = int(threadIdx.x) / 32, lane = int(threadIdx.x) % 32;
    const LatentTile tile = p.tiles[blockIdx.x];
    const LatentSequence s = p.sequences[tile.sequence];
    const int64_t head = tile.head0 + warp;
    if (head >= s.n_heads) return;
    const int64_t query_row = tile.token * s.n_heads + head;
    const int64_t stride = 2 + p.latent_dim;
    const float* partial = p.partials + (s.first_row + query_row) * p.splits * stride;
    for (int d = lane; d < p.latent_dim; d += 32)
        s.out[query_row * p.latent_dim + d] = combine_partials(partial, stride, int(p.splits), d);
}

}  // namespace

void latent_attention(Context& ctx, std::span<const LatentAttentionArgs> sequences) {
    if (sequences.empty()) return;
    const Device device = ctx.device();
    const int64_t row = sequences[0].q.rank() == 3 ? sequences[0].q.dim(2) : 0;
    const int64_t rope_dim = sequences[0].rope_dim, latent_dim = row - rope_dim;
    std::vector<LatentSequence> seqs;
    std::vector<LatentTile> tiles;
    int64_t total_rows = 0, max_keys = 0;
    for (size_t i = 0; i < sequences.size(); ++i) {
        const LatentAttentionArgs& a = sequences[i];
        require_f32(a.q, 3, device, "latent_attention", "q [n_new, n_heads, rope + latent]");
        require_f32(a.out, 3, device, "latent_attention", "out [n_new, n_heads, latent]");
        const int64_t n_new = a.q.dim(0), n_heads = a.q.dim(1);
        if (a.q.dim(2) != row || a.rope_dim != rope_dim)
            fail("latent_attention: sequence ", i, " has rows of ", a.q.dim(2), " (rope ",
                 a.rope_dim, "), sequence 0 of ", row, " (rope ", rope_dim,
                 "): one call takes one shape");
        if (rope_dim < 0 || latent_dim <= 0 || row > kLatentMaxRow)
            fail("latent_attention: rows of ", row, " with rope_dim ", rope_dim,
                 ": need 0 <= rope_dim < row <= ", kLatentMaxRow);
        if (a.out.dim(0) != n_new || a.out.dim(1) != n_heads || a.out.dim(2) != latent_dim)
            fail("latent_attention: out ", a.out.describe(), " for q ", a.q.describe(),
                 " and rope_dim ", rope_dim);
        if (a.cache.empty() || a.cache.n_heads != 1 || a.cache.head_dim != row)
            fail("latent_attention: sequence ", i, "'s cache has rows of ", a.cache.n_heads, " x ",
                 a.cache.head_dim, ", expected 1 x ", row);
        if (a.start_pos < 0 || a.start_pos + n_new > a.cache.capacity)
            fail("latent_attention: positions [", a.start_pos, ", ", a.start_pos + n_new,
                 ") exceed the cache's capacity ", a.cache.capacity);
        seqs.push_back({.q = a.q.data_as<const float>(),
                        .out = a.out.data_as<float>(),
                        .cache = view_of(a.cache, "latent"),
                        .n_heads = n_heads,
                        .start_pos = a.start_pos,
                        .first_row = total_rows});
        for (int64_t t = 0; t < n_new; ++t)
            for (int64_t h = 0; h < n_heads; h += kHeads)
                tiles.push_back({int32_t(i), int32_t(t), int32_t(h), 0});
        total_rows += n_new * n_heads;
        max_keys = std::max(max_keys, a.start_pos + n_new);
    }
    if (tiles.empty()) return;
    const int64_t splits = latent_splits(int64_t(tiles.size()), max_keys, ctx.multiprocessors());
    LatentParams p{.row = int(row),
                   .rope_dim = int(rope_dim),
                   .latent_dim = int(latent_dim),
                   .splits = splits,
                   .split_keys = latent_split_keys(max_keys, splits),
                   .q_scale = sequences[0].scale * std::numbers::log2e_v<float>,
                   .partials = nullptr};
    for (const LatentAttentionArgs& a : sequences)
        if (a.scale != sequences[0].scale)
            fail("latent_attention: the sequences' scales differ; one call takes one scale");
    const size_t tile_offset = (seqs.size() * sizeof(LatentSequence) + 15) / 16 * 16;
    std::vector<std::byte> table(tile_offset + tiles.size() * sizeof(LatentTile));
    std::memcpy(table.data(), seqs.data(), seqs.size() * sizeof(LatentSequence));
    std::memcpy(table.data() + tile_offset, tiles.data(), tiles.size() * sizeof(LatentTile));
    auto* on_device =
        static_cast<std::byte*>(ctx.upload(ScratchSlot::Tables, table.data(), table.size()));
    p.sequences = reinterpret_cast<const LatentSequence*>(on_device);
    p.tiles = reinterpret_cast<const LatentTile*>(on_device + tile_offset);
    if (splits > 1)
        p.partials = static_cast<float*>(
            ctx.scratch(ScratchSlot::Attention,
                        size_t(total_rows * splits * (2 + latent_dim)) * sizeof(float)));
    const cudaStream_t stream = native_stream(ctx.stream());
    const size_t shared = size_t(kChunk * row) * sizeof(float);
    latent_kernel<<<dim3(unsigned(tiles.size()), unsigned(splits)), kThreads, shared, stream>>>(p);
    TANDEM_CUDA_CHECK_LAUNCH("latent_kernel");
    if (splits > 1) {
        combine_kernel<<<unsigned(tiles.size()), kThreads, 0, stream>>>(p);
        TANDEM_CUDA_CHECK_LAUNCH("latent combine_kernel");
    }
}

}  // namespace tandem::cuda

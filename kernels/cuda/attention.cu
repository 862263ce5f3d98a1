// attention() and write_kv() on the GPU (attention.h).
//
// attention_kernel<kRowsPerWarp>: 4 warps; a tile's rows r = slot * 4 + warp, so a decode tile
// of 4 query heads gives each warp one row. Shared memory holds the tile's scaled queries
// [rows, qs], one chunk of 32 keys [32, qs] and values [32, vs] converted to f32, and each warp's
// probabilities [rows per warp, 32]. qs = 4 x an odd number >= head_dim, so the float4 loads of
// 32 lanes reading 32 different keys hit distinct banks; padding is zero. Per chunk, lane j scores
// key j against the warp's rows, the row max is a warp reduction, and each lane then accumulates
// the output dimensions lane, lane + 32, ... of its rows.
#include "kernels/cuda/attention.h"

#include <algorithm>
#include <cstring>
#include <numbers>
#include <vector>

#include "kernels/cuda/attention_math.h"
#include "kernels/cuda/attention_plan.h"
#include "kernels/cuda/attention_prefill.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/tensor_checks.h"

namespace tandem::cuda {

namespace {

constexpr int kWarps = kAttentionWarps;
constexpr int kThreads = kWarps * 32;
constexpr int kChunk = kAttentionChunk;
constexpr int kDimsPerLane = kAttentionMaxDim / 32;  // output dims a lane accumulates per row

using Sequence = SequenceRow;

using Tile = AttentionTile;
using SplitGroup = AttentionSplitGroup;
using SharedLayout = AttentionSharedLayout;

__device__ float warp_max(float v) {
    for (int offset = 16; offset > 0; offset /= 2)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
    return v;
}

__device__ float warp_sum(float v) {
    for (int offset = 16; offset > 0; offset /= 2)
        v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}

// Four elements [i, i + 4) of KV rows as f32, i a multiple of 4 and the rows 16-byte aligned
// (KvView::aligned4): one 16- or 8-byte load.
__device__ float4 load_four(const KvView& kv, int64_t i) {
    if (kv.kind == FloatKind::F32) return *reinterpret_cast<const float4*>(kv.base + i * 4);
    const uint2 bits = *reinterpret_cast<const uint2*>(kv.base + i * 2);
    if (kv.kind == FloatKind::F16)
        return {f16_bits_to_f32(uint16_t(bits.x)), f16_bits_to_f32(uint16_t(bits.x >> 16)),
                f16_bits_to_f32(uint16_t(bits.y)), f16_bits_to_f32(uint16_t(bits.y >> 16))};
    // bf16: the high half of an f32.
    return {__uint_as_float(bits.x << 16), __uint_as_float(bits.x & 0xffff0000u),
            __uint_as_float(bits.y << 16), __uint_as_float(bits.y & 0xffff0000u)};
}

// One chunk of keys or values, positions [c0, c0 + kChunk), into shared memory as f32 rows
// `stride` floats apart (a multiple of 4), zero past dim and past key_end. Each warp takes every
// kWarps-th position, so a row's address is computed once and its lanes read it contiguously.
__device__ void load_chunk(const KvView& kv, int64_t kv_head, int64_t c0, int64_t key_end,
                           int64_t dim, int64_t stride, float* dst) {
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    for (int j = warp; j < kChunk; j += kWarps) {
        float* row = dst + j * stride;
        const int64_t pos = c0 + j;
        if (pos >= key_end) {
            for (int64_t d = lane; d < stride; d += 32)
                row[d] = 0.0f;
            continue;
        }
        const int64_t first = kv_element(kv, pos, kv_head);
        if (kv.aligned4) {
            for (int64_t d = lane * 4; d < stride; d += 128)
                *reinterpret_cast<float4*>(row + d) =
                    d < dim ? load_four(kv, first + d) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        } else {
            for (int64_t d = lane; d < stride; d += 32)
                row[d] = d < dim ? load_float(kv.base, kv.kind, first + d) : 0.0f;
        }
    }
}

template <int kRowsPerWarp>
__global__ void __launch_bounds__(kThreads)
    attention_kernel(const Sequence* sequences, const Tile* tiles, SharedLayout layout,
                     float* partials, int64_t partial_stride) {
    extern __shared__ float4 shared4[];
    float* shared = reinterpret_cast<float*>(shared4);
    const Tile tile = tiles[blockIdx.x];
    const Sequence& s = sequences[tile.seq];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int64_t rows = tile.n_pos * tile.n_heads;
    float* qs = shared + layout.q;
    float* ks = shared + layout.k;
    float* vs = shared + layout.v;
    float* ps = shared + layout.p + warp * kRowsPerWarp * kChunk;

    for (int64_t idx = threadIdx.x; idx < kWarps * kRowsPerWarp * layout.qs; idx += kThreads) {
        const int64_t r = idx / layout.qs, d = idx % layout.qs;
        float value = 0.0f;
        if (r < rows && d < s.head_dim) {
            const int64_t t = tile.t0 + r / tile.n_heads, h = tile.head0 + r % tile.n_heads;
            value = s.q[(t * s.n_heads + h) * s.head_dim + d] * s.q_scale;
        }
        qs[idx] = value;
    }

    float m[kRowsPerWarp], l[kRowsPerWarp], acc[kRowsPerWarp][kDimsPerLane];
    int64_t pos[kRowsPerWarp], first_key[kRowsPerWarp];
    for (int i = 0; i < kRowsPerWarp; ++i) {
        const int64_t r = int64_t(i) * kWarps + warp;
        pos[i] = s.start_pos + tile.t0 + r / tile.n_heads;
        first_key[i] = s.window > 0 ? max(int64_t(0), pos[i] - s.window + 1) : 0;
        m[i] = -INFINITY;
        l[i] = 0.0f;
        for (int e = 0; e < kDimsPerLane; ++e)
            acc[i][e] = 0.0f;
    }
    const int64_t quads = layout.qs / 4;

    for (int64_t c0 = tile.key_begin; c0 < tile.key_end; c0 += kChunk) {
        __syncthreads();  // the previous chunk is consumed (and, first time, q is stored)
        load_chunk(s.k, tile.kv_head, c0, tile.key_end, s.head_dim, layout.qs, ks);
        load_chunk(s.v, tile.kv_head, c0, tile.key_end, s.v_dim, layout.vs, vs);
        __syncthreads();
        float score[kRowsPerWarp];
        for (int i = 0; i < kRowsPerWarp; ++i)
            score[i] = 0.0f;
        const float4* key = reinterpret_cast<const float4*>(ks + lane * layout.qs);
        for (int64_t d4 = 0; d4 < quads; ++d4) {
            const float4 k4 = key[d4];
            for (int i = 0; i < kRowsPerWarp; ++i) {
                if (int64_t(i) * kWarps + warp >= rows) break;  // warp-uniform
                const float4 q4 = reinterpret_cast<const float4*>(
                    qs + (int64_t(i) * kWarps + warp) * layout.qs)[d4];
                score[i] += q4.x * k4.x + q4.y * k4.y + q4.z * k4.z + q4.w * k4.w;
            }
        }
        const int64_t key_pos = c0 + lane;
        for (int i = 0; i < kRowsPerWarp; ++i) {
            const int64_t r = int64_t(i) * kWarps + warp;
            if (r >= rows) break;  // warp-uniform: later slots are empty too
            const bool visible =
                key_pos < tile.key_end && key_pos <= pos[i] && key_pos >= first_key[i];
            const float sc = visible ? score[i] : -INFINITY;
            const float m_new = fmaxf(m[i], warp_max(sc));
            float p = 0.0f, rescale = 1.0f;
            if (m_new != -INFINITY) {
                p = visible ? exp2f(sc - m_new) : 0.0f;
                rescale = softmax_rescale(m[i], m_new);
            }
            m[i] = m_new;
            l[i] = l[i] * rescale + p;
            for (int e = 0; e < kDimsPerLane; ++e)
                acc[i][e] *= rescale;
            ps[i * kChunk + lane] = p;
        }
        __syncwarp();
        for (int j = 0; j < kChunk; j += 4) {
            for (int i = 0; i < kRowsPerWarp; ++i) {
                if (int64_t(i) * kWarps + warp >= rows) break;
                const float4 p4 = *reinterpret_cast<const float4*>(ps + i * kChunk + j);
                for (int e = 0; e < kDimsPerLane; ++e) {
                    const int64_t d = e * 32 + lane;
                    if (d >= s.v_dim) break;
                    const float* v = vs + j * layout.vs + d;
                    acc[i][e] += p4.x * v[0] + p4.y * v[layout.vs] + p4.z * v[2 * layout.vs] +
                                 p4.w * v[3 * layout.vs];
                }
            }
        }
        __syncwarp();
    }

    for (int i = 0; i < kRowsPerWarp; ++i) {
        const int64_t r = int64_t(i) * kWarps + warp;
        if (r >= rows) break;
        const float sum = warp_sum(l[i]);
        if (tile.partial < 0) {
            const int64_t t = tile.t0 + r / tile.n_heads, h = tile.head0 + r % tile.n_heads;
            float* out = s.out + (t * s.n_heads + h) * s.v_dim;
            const float sink2 = sink_log2(s.sinks, h);
            for (int e = 0; e < kDimsPerLane; ++e)
                if (e * 32 + lane < s.v_dim)
                    out[e * 32 + lane] = softmax_output(acc[i][e], sum, m[i], sink2);
        } else {
            float* row = partials + (tile.partial + r) * partial_stride;
            if (lane == 0) {
                row[PartialRow::kMax] = m[i];
                row[PartialRow::kSum] = sum;
            }
            for (int e = 0; e < kDimsPerLane; ++e)
                if (e * 32 + lane < s.v_dim) row[PartialRow::kAcc + e * 32 + lane] = acc[i][e];
        }
    }
}

// One block per (split group, row): the row's output from its splits' partial rows.
__global__ void combine_kernel(const Sequence* sequences, const SplitGroup* groups,
                               const float* partials, int64_t partial_stride) {
    const SplitGroup g = groups[blockIdx.x];
    const int64_t r = blockIdx.y, rows = g.n_pos * g.n_heads;
    if (r >= rows) return;
    const Sequence& s = sequences[g.seq];
    const int64_t t = g.t0 + r / g.n_heads, h = g.head0 + r % g.n_heads;
    float* out = s.out + (t * s.n_heads + h) * s.v_dim;
    const float* first = partials + (g.partial + r) * partial_stride;
    const float sink2 = sink_log2(s.sinks, h);
    for (int64_t d = threadIdx.x; d < s.v_dim; d += blockDim.x)
        out[d] = combine_partials(first, rows * partial_stride, g.n_splits, d, sink2);
}

void check_args(Context& ctx, const AttentionArgs& a) {
    require_f32(a.q, 3, ctx.device(), "attention", "q [n_new, n_heads, head_dim]");
    require_f32(a.out, 3, ctx.device(), "attention", "out [n_new, n_heads, v_head_dim]");
    const KvRows &k = a.k_cache, &v = a.v_cache;
    if (k.empty() || v.empty()) fail("attention: the KV cache is empty");
    const int64_t n_new = a.q.dim(0), n_heads = a.q.dim(1), n_kv = k.n_heads;
    if (n_kv == 0 || n_heads % n_kv != 0)
        fail("attention: ", n_heads, " query heads are not a multiple of ", n_kv, " KV heads");
    if (k.head_dim != a.q.dim(2) || v.n_heads != n_kv || v.capacity != k.capacity)
        fail("attention: q ", a.q.describe(), ", keys of ", n_kv, " x ", k.head_dim,
             " and values of ", v.n_heads, " x ", v.head_dim, " disagree");
    if (a.out.dim(0) != n_new || a.out.dim(1) != n_heads || a.out.dim(2) != v.head_dim)
        fail("attention: out ", a.out.describe(), " does not match q ", a.q.describe());
    if (k.head_dim > kAttentionMaxDim || v.head_dim > kAttentionMaxDim || k.head_dim == 0 ||
        v.head_dim == 0)
        fail("attention: head_dim ", k.head_dim, " and v_head_dim ", v.head_dim, " must be in [1, ",
             kAttentionMaxDim, "] on CUDA");
    if (a.start_pos < 0 || a.start_pos + n_new > k.capacity)
        fail("attention: positions [", a.start_pos, ", ", a.start_pos + n_new,
             ") exceed the KV cache capacity ", k.capacity);
    if (a.sliding_window < 0) fail("attention: sliding window ", a.sliding_window, " < 0");
}

template <int kRowsPerWarp>
void launch_tiles(Context& ctx, const Sequence* sequences, const Tile* tiles, int64_t n_tiles,
                  const SharedLayout& layout, float* partials, int64_t partial_stride) {
    const size_t bytes = size_t(layout.floats) * sizeof(float);
    TANDEM_CUDA_CHECK(cudaFuncSetAttribute(
        attention_kernel<kRowsPerWarp>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
    attention_kernel<kRowsPerWarp>
        <<<unsigned(n_tiles), kThreads, bytes, native_stream(ctx.stream())>>>(
            sequences, tiles, layout, partials, partial_stride);
    TANDEM_CUDA_CHECK_LAUNCH("attention_kernel");
}

// Appends the bytes of `items` to `table` at a 16-byte boundary; returns their offset.
template <class T>
size_t append(std::vector<std::byte>& table, const std::vector<T>& items) {
    const size_t offset = (table.size() + 15) / 16 * 16;
    table.resize(offset + items.size() * sizeof(T));
    if (!items.empty()) std::memcpy(table.data() + offset, items.data(), items.size() * sizeof(T));
    return offset;
}

}  // namespace

KvView view_of(const KvRows& rows, const char* name) {
    // A contiguous tensor (KvRows(Tensor)) points at a host table holding 0: read no table.
    const bool contiguous = rows.block_size == rows.capacity && rows.head_stride == rows.head_dim &&
                            rows.pos_stride == rows.n_heads * rows.head_dim;
    if (!contiguous && rows.block_table == nullptr)
        fail("attention: the ", name, " cache has no block table");
    const int64_t element = rows.element_bytes();
    const bool aligned4 =
        rows.head_dim % 4 == 0 && reinterpret_cast<uintptr_t>(rows.base) % (4 * element) == 0;
    return {.base = rows.base,
            .block_table = contiguous ? nullptr : rows.block_table,
            .block_size = rows.block_size,
            .pos_stride = rows.pos_stride,
            .head_stride = rows.head_stride,
            .block_stride = rows.block_stride,
            .kind = float_kind(rows.dtype, "attention", name),
            .aligned4 = aligned4};
}

SequenceRow sequence_row(const AttentionArgs& a) {
    return {.q = a.q.data_as<const float>(),
            .out = a.out.data_as<float>(),
            .k = view_of(a.k_cache, "key"),
            .v = view_of(a.v_cache, "value"),
            .n_heads = a.q.dim(1),
            .head_dim = a.q.dim(2),
            .v_dim = a.v_cache.head_dim,
            .start_pos = a.start_pos,
            .window = a.sliding_window,
            .q_scale = a.scale * std::numbers::log2e_v<float>,
            .sinks = a.sinks};
}

AttentionShape shape_of(const AttentionArgs& a) {
    return {.n_new = a.q.dim(0),
            .n_heads = a.q.dim(1),
            .n_kv_heads = a.k_cache.n_heads,
            .head_dim = a.q.dim(2),
            .v_dim = a.v_cache.head_dim,
            .start_pos = a.start_pos,
            .window = a.sliding_window};
}

namespace {

// The decode kernel's arguments for a call where every sequence decodes one token, their queries
// and outputs are consecutive rows of one tensor (as the decoder slices them) and they share a
// cache layout; false otherwise (the tile kernel takes the call). `table` gets the sequence rows.
bool as_decode(std::span<const AttentionArgs> sequences, DecodeAttentionArgs& d,
               std::vector<DecodeSequence>& table) {
    const AttentionArgs& a0 = sequences.front();
    const auto batch = int64_t(sequences.size());
    const int64_t q_row = a0.q.numel(), out_row = a0.out.numel();
    d = {.q = Tensor(a0.q.data(), DType::F32, {batch, a0.q.dim(1), a0.q.dim(2)}, a0.q.device()),
         .out = Tensor(a0.out.data(), DType::F32, {batch, a0.out.dim(1), a0.out.dim(2)},
                       a0.out.device()),
         .sequences = nullptr,
         .k = layout_of(a0.k_cache),
         .v = layout_of(a0.v_cache),
         .max_keys = 1,
         .scale = a0.scale,
         .sliding_window = a0.sliding_window,
         .sinks = a0.sinks};
    const auto same = [](const KvLayout& x, const KvLayout& y) {
        return x.dtype == y.dtype && x.n_kv_heads == y.n_kv_heads && x.head_dim == y.head_dim &&
               x.block_size == y.block_size && x.pos_stride == y.pos_stride &&
               x.head_stride == y.head_stride && x.block_stride == y.block_stride;
    };
    const auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
    for (int64_t i = 0; i < batch; ++i) {
        const AttentionArgs& a = sequences[size_t(i)];
        if (a.q.dim(0) != 1 || a.scale != a0.scale || a.sliding_window != a0.sliding_window ||
            a.sinks != a0.sinks ||
            a.q.data_as<const float>() != a0.q.data_as<const float>() + i * q_row ||
            a.out.data_as<const float>() != a0.out.data_as<const float>() + i * out_row ||
            !same(layout_of(a.k_cache), d.k) || !same(layout_of(a.v_cache), d.v) ||
            !aligned(a.k_cache.base) || !aligned(a.v_cache.base))
            return false;
        const KvView k = view_of(a.k_cache, "key"), v = view_of(a.v_cache, "value");
        table.push_back({.k_base = k.base,
                         .v_base = v.base,
                         .k_blocks = k.block_table,
                         .v_blocks = v.block_table,
                         .position = a.start_pos});
        d.max_keys = std::max(d.max_keys, a.start_pos + 1);
    }
    return decode_supported(d);
}

}  // namespace

void attention(Context& ctx, std::span<const AttentionArgs> sequences) {
    for (const AttentionArgs& a : sequences)
        check_args(ctx, a);
    if (sequences.empty()) return;
    DecodeAttentionArgs decode;
    std::vector<DecodeSequence> decode_table;
    if (as_decode(sequences, decode, decode_table)) {
        // A few dozen bytes per sequence: the pageable copy is staged at once.
        decode.sequences = static_cast<const DecodeSequence*>(
            ctx.upload(ScratchSlot::Tables, decode_table.data(),
                       decode_table.size() * sizeof(DecodeSequence)));
        attention_decode(ctx, decode);
        return;
    }
    if (prefill_supported(sequences)) {
        attention_prefill(ctx, sequences);
        return;
    }
    std::vector<Sequence> seqs;
    std::vector<AttentionShape> shapes;
    for (const AttentionArgs& a : sequences) {
        seqs.push_back(sequence_row(a));
        shapes.push_back(shape_of(a));
    }
    const AttentionPlan plan = plan_attention(shapes, ctx.multiprocessors());
    if (plan.tiles.empty()) return;

    std::vector<std::byte> table;
    const size_t seq_offset = append(table, seqs);
    const size_t tile_offset = append(table, plan.tiles);
    const size_t group_offset = append(table, plan.groups);
    auto* device =
        static_cast<std::byte*>(ctx.upload(ScratchSlot::Tables, table.data(), table.size()));
    const auto* device_seqs = reinterpret_cast<const Sequence*>(device + seq_offset);
    const int64_t partial_stride = PartialRow::kAcc + plan.max_v_dim;
    float* partials = nullptr;
    if (plan.n_partials > 0)
        partials = static_cast<float*>(ctx.scratch(
            ScratchSlot::Attention, size_t(plan.n_partials * partial_stride) * sizeof(float)));
    const auto* device_tiles = reinterpret_cast<const Tile*>(device + tile_offset);
    const auto n_tiles = int64_t(plan.tiles.size());
    const SharedLayout& layout = plan.layout;
    switch (plan.rows_per_warp) {
        case 1:
            launch_tiles<1>(ctx, device_seqs, device_tiles, n_tiles, layout, partials,
                            partial_stride);
            break;
        case 2:
            launch_tiles<2>(ctx, device_seqs, device_tiles, n_tiles, layout, partials,
                            partial_stride);
            break;
        case 4:
            launch_tiles<4>(ctx, device_seqs, device_tiles, n_tiles, layout, partials,
                            partial_stride);
            break;
        default:
            launch_tiles<8>(ctx, device_seqs, device_tiles, n_tiles, layout, partials,
                            partial_stride);
    }
    if (plan.groups.empty()) return;
    const dim3 grid(unsigned(plan.groups.size()), unsigned(kWarps * plan.rows_per_warp));
    combine_kernel<<<grid, 128, 0, native_stream(ctx.stream())>>>(
        device_seqs, reinterpret_cast<const SplitGroup*>(device + group_offset), partials,
        partial_stride);
    TANDEM_CUDA_CHECK_LAUNCH("combine_kernel");
}

namespace {

__global__ void write_kv_kernel(KvView rows, int64_t start, const float* src, int64_t n_heads,
                                int64_t head_dim, int64_t n) {
    const int64_t row = n_heads * head_dim;
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n * row;
         i += int64_t(gridDim.x) * blockDim.x) {
        const int64_t t = i / row, head = i % row / head_dim, d = i % head_dim;
        store_float(const_cast<std::byte*>(rows.base), rows.kind,
                    kv_element(rows, start + t, head) + d, src[i]);
    }
}

// One element of a decode step's new rows: thread i of [batch, k row | v row].
__global__ void write_kv_decode_kernel(const DecodeSequence* sequences, KvLayout k, KvLayout v,
                                       FloatKind k_kind, FloatKind v_kind, const float* k_src,
                                       const float* v_src, int64_t batch) {
    const int64_t k_row = k.n_kv_heads * k.head_dim, v_row = v.n_kv_heads * v.head_dim;
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < batch * (k_row + v_row);
         i += int64_t(gridDim.x) * blockDim.x) {
        const int64_t b = i / (k_row + v_row), e = i % (k_row + v_row);
        const DecodeSequence& s = sequences[b];
        const bool is_key = e < k_row;
        const KvLayout& l = is_key ? k : v;
        const int64_t j = is_key ? e : e - k_row;
        const int32_t* blocks = is_key ? s.k_blocks : s.v_blocks;
        const int64_t block = blocks != nullptr ? blocks[s.position / l.block_size] : 0;
        const int64_t element = block * l.block_stride + s.position % l.block_size * l.pos_stride +
                                j / l.head_dim * l.head_stride + j % l.head_dim;
        store_float(const_cast<void*>(is_key ? s.k_base : s.v_base), is_key ? k_kind : v_kind,
                    element, is_key ? k_src[b * k_row + j] : v_src[b * v_row + j]);
    }
}

}  // namespace

void write_kv_decode(Context& ctx, const DecodeSequence* sequences, const KvLayout& k,
                     const KvLayout& v, const Tensor& k_src, const Tensor& v_src) {
    require_f32(k_src, 2, ctx.device(), "write_kv_decode", "k_src [batch, n_kv_heads * head_dim]");
    require_f32(v_src, 2, ctx.device(), "write_kv_decode", "v_src [batch, n_kv_heads * v_dim]");
    const int64_t batch = k_src.dim(0);
    if (sequences == nullptr) fail("write_kv_decode: no sequence table");
    if (v_src.dim(0) != batch || k_src.dim(1) != k.n_kv_heads * k.head_dim ||
        v_src.dim(1) != v.n_kv_heads * v.head_dim)
        fail("write_kv_decode: k_src ", k_src.describe(), " and v_src ", v_src.describe(),
             " for rows of ", k.n_kv_heads, " x ", k.head_dim, " and ", v.n_kv_heads, " x ",
             v.head_dim);
    for (const KvLayout* l : {&k, &v})
        if (l->block_size < 1) fail("write_kv_decode: block size ", l->block_size);
    const FloatKind k_kind = float_kind(k.dtype, "write_kv_decode", "the key cache");
    const FloatKind v_kind = float_kind(v.dtype, "write_kv_decode", "the value cache");
    const int64_t total = batch * (k_src.dim(1) + v_src.dim(1));
    if (total == 0) return;
    const unsigned blocks =
        unsigned(std::min<int64_t>(blocks_for(total, 256), int64_t(ctx.multiprocessors()) * 8));
    write_kv_decode_kernel<<<blocks, 256, 0, native_stream(ctx.stream())>>>(
        sequences, k, v, k_kind, v_kind, k_src.data_as<const float>(), v_src.data_as<const float>(),
        batch);
    TANDEM_CUDA_CHECK_LAUNCH("write_kv_decode_kernel");
}

void write_kv(Context& ctx, const KvRows& rows, int64_t start, const Tensor& src) {
    require_f32(src, 2, ctx.device(), "write_kv", "src [n, n_heads * head_dim]");
    if (rows.empty()) fail("write_kv: the KV rows are empty");
    const int64_t n = src.dim(0);
    if (src.dim(1) != rows.n_heads * rows.head_dim)
        fail("write_kv: src ", src.describe(), " for rows of ", rows.n_heads, " x ", rows.head_dim);
    if (start < 0 || start + n > rows.capacity)
        fail("write_kv: positions [", start, ", ", start + n, ") exceed the capacity ",
             rows.capacity);
    if (n == 0) return;
    const KvView view = view_of(rows, "write_kv");
    const int64_t total = n * rows.n_heads * rows.head_dim;
    const unsigned blocks =
        unsigned(std::min<int64_t>(blocks_for(total, 256), int64_t(ctx.multiprocessors()) * 8));
    write_kv_kernel<<<blocks, 256, 0, native_stream(ctx.stream())>>>(
        view, start, src.data_as<const float>(), rows.n_heads, rows.head_dim, n);
    TANDEM_CUDA_CHECK_LAUNCH("write_kv_kernel");
}

}  // namespace tandem::cuda

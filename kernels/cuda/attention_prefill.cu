// attention_prefill() (attention_prefill.h): flash attention for prefill on tensor cores.
//
// prefill_kernel<kD>: a block of 4 warps per tile of up to 64 query rows (positions x the query
// heads of one KV head, plan_prefill), 16 rows per warp. Shared memory holds the tile's queries
// [64, kD + 8] (scaled by scale x log2 e), a chunk of 64 keys [64, kD + 8] and its values
// transposed [kD, 64 + 8], all converted to bf16 (round to nearest even) from the f32 queries and
// the f32/f16/bf16 cache; the +8 pads make the 32-bit fragment loads conflict-free. Per chunk a
// warp computes S = Q Kᵀ (16 x 64) with mma.sync m16n8k16 (bf16 in, f32 accumulate), masks it
// (causal, sliding window, the chunk's end), updates its rows' online softmax in f32 (base 2), and
// adds P V with P rounded to bf16 straight from the S registers. Each row's sum is kept per lane
// and added across the row's four lanes at the end.
// Limits: head_dim and v_dim multiples of 16 up to 128 (kD = 64 or 128); rows in whole 16-byte
// loads (prefill_supported). Error: Q, K, P and V rounded to bf16 (2^-9 relative each).
#include <cuda_bf16.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/cuda/attention_plan.h"
#include "kernels/cuda/attention_prefill.h"
#include "kernels/cuda/cuda_check.h"

namespace tandem::cuda {

namespace {

constexpr int kThreads = 128;
constexpr int kRows = kPrefillRows;
constexpr int kKeys = kPrefillKeys;
constexpr int kVStride = kKeys + 8;  // halves per transposed value row

using PrefillSequence = SequenceRow;

template <int kD>
constexpr size_t shared_bytes() {
    return size_t(2 * kRows * (kD + 8) + kD * kVStride) * sizeof(uint16_t);
}

__device__ uint32_t pack_bf16(float lo, float hi) {
    return uint32_t(f32_to_bf16_bits(lo)) | uint32_t(f32_to_bf16_bits(hi)) << 16;
}

// 8 elements of a row at `element`, as 8 bf16 (round to nearest even; bf16 rows copied as is).
__device__ uint4 load_bf16x8(const KvView& kv, int64_t element) {
    if (kv.kind == FloatKind::BF16)
        return __ldg(reinterpret_cast<const uint4*>(kv.base + element * 2));
    float f[8];
    if (kv.kind == FloatKind::F32) {
        const auto* p = reinterpret_cast<const float4*>(kv.base + element * 4);
        const float4 a = __ldg(p), b = __ldg(p + 1);
        f[0] = a.x, f[1] = a.y, f[2] = a.z, f[3] = a.w, f[4] = b.x, f[5] = b.y, f[6] = b.z,
        f[7] = b.w;
    } else {
        const uint4 w = __ldg(reinterpret_cast<const uint4*>(kv.base + element * 2));
        const uint32_t words[4] = {w.x, w.y, w.z, w.w};
        for (int i = 0; i < 4; ++i) {
            f[2 * i] = f16_bits_to_f32(uint16_t(words[i]));
            f[2 * i + 1] = f16_bits_to_f32(uint16_t(words[i] >> 16));
        }
    }
    return make_uint4(pack_bf16(f[0], f[1]), pack_bf16(f[2], f[3]), pack_bf16(f[4], f[5]),
                      pack_bf16(f[6], f[7]));
}

// D (16 x 8, f32) += A (16 x 16, bf16, row) x B (16 x 8, bf16, col).
__device__ void mma_bf16(float* d, uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                         uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

__device__ uint32_t word(const uint16_t* p) {
    return *reinterpret_cast<const uint32_t*>(p);
}

template <int kD>
__global__ void __launch_bounds__(kThreads)
    prefill_kernel(const PrefillSequence* sequences, const AttentionTile* tiles) {
    constexpr int kStride = kD + 8;  // halves per query or key row
    extern __shared__ uint4 shared4[];
    uint16_t* qs = reinterpret_cast<uint16_t*>(shared4);
    uint16_t* ks = qs + kRows * kStride;
    uint16_t* vt = ks + kKeys * kStride;
    const AttentionTile tile = tiles[blockIdx.x];
    const PrefillSequence& s = sequences[tile.seq];
    const int warp = int(threadIdx.x) / 32, lane = int(threadIdx.x) % 32;
    const int g = lane / 4, t = lane % 4;  // the mma fragments' row group and column pair
    const int64_t rows = tile.n_pos * tile.n_heads;

    for (int idx = int(threadIdx.x); idx < kRows * kD / 4; idx += kThreads) {
        const int r = idx / (kD / 4), c = idx % (kD / 4) * 4;
        float4 x = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        if (r < rows && c < s.head_dim) {
            const int64_t pos = tile.t0 + r / tile.n_heads, h = tile.head0 + r % tile.n_heads;
            x = *reinterpret_cast<const float4*>(s.q + (pos * s.n_heads + h) * s.head_dim + c);
        }
        *reinterpret_cast<uint2*>(qs + r * kStride + c) =
            make_uint2(pack_bf16(x.x * s.q_scale, x.y * s.q_scale),
                       pack_bf16(x.z * s.q_scale, x.w * s.q_scale));
    }

    // This lane's two rows: warp * 16 + g and + 8. Rows past the tile see no key.
    int64_t pos[2], first[2];
    for (int i = 0; i < 2; ++i) {
        const int64_t r = warp * 16 + g + i * 8;
        pos[i] = r < rows ? s.start_pos + tile.t0 + r / tile.n_heads : -1;
        first[i] = s.window > 0 ? max(int64_t(0), pos[i] - s.window + 1) : 0;
    }
    float o[kD / 8][4];
    for (int n = 0; n < kD / 8; ++n)
        for (int e = 0; e < 4; ++e)
            o[n][e] = 0.0f;
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
    const int k_steps = int(s.head_dim) / 16, v_tiles = int(s.v_dim) / 8;
    const uint16_t* q_lo = qs + (warp * 16 + g) * kStride + 2 * t;
    const uint16_t* q_hi = q_lo + 8 * kStride;

    for (int64_t c0 = tile.key_begin; c0 < tile.key_end; c0 += kKeys) {
        __syncthreads();  // the previous chunk is consumed (and, first time, q is stored)
        for (int idx = int(threadIdx.x); idx < kKeys * (kD / 8); idx += kThreads) {
            // Keys: 16-byte pieces of a row to consecutive lanes (coalesced reads and stores).
            const int key = idx / (kD / 8), c = idx % (kD / 8) * 8;
            uint4 x = make_uint4(0, 0, 0, 0);
            if (c0 + key < tile.key_end && c < s.head_dim)
                x = load_bf16x8(s.k, kv_element(s.k, c0 + key, tile.kv_head) + c);
            *reinterpret_cast<uint4*>(ks + key * kStride + c) = x;
        }
        for (int idx = int(threadIdx.x); idx < kKeys * (kD / 8); idx += kThreads) {
            // Values: consecutive keys to consecutive lanes, so the transposed 2-byte stores of
            // a warp fall in distinct banks.
            const int key = idx % kKeys, c = idx / kKeys * 8;
            uint4 x = make_uint4(0, 0, 0, 0);
            if (c0 + key < tile.key_end && c < s.v_dim)
                x = load_bf16x8(s.v, kv_element(s.v, c0 + key, tile.kv_head) + c);
            const uint32_t w[4] = {x.x, x.y, x.z, x.w};
            for (int e = 0; e < 8; ++e)
                vt[(c + e) * kVStride + key] = uint16_t(w[e / 2] >> (16 * (e % 2)));
        }
        __syncthreads();

        float sc[kKeys / 8][4];
        for (int j = 0; j < kKeys / 8; ++j)
            for (int e = 0; e < 4; ++e)
                sc[j][e] = 0.0f;
        for (int kk = 0; kk < kD / 16; ++kk) {
            if (kk >= k_steps) break;
            const uint32_t a0 = word(q_lo + kk * 16), a1 = word(q_hi + kk * 16);
            const uint32_t a2 = word(q_lo + kk * 16 + 8), a3 = word(q_hi + kk * 16 + 8);
            for (int j = 0; j < kKeys / 8; ++j) {
                const uint16_t* k = ks + (j * 8 + g) * kStride + kk * 16 + 2 * t;
                mma_bf16(sc[j], a0, a1, a2, a3, word(k), word(k + 8));
            }
        }

        // Masks and the online softmax of rows g (e = 0, 1) and g + 8 (e = 2, 3).
        for (int i = 0; i < 2; ++i) {
            float mx = -INFINITY;
            for (int j = 0; j < kKeys / 8; ++j)
                for (int e = 2 * i; e < 2 * i + 2; ++e) {
                    const int64_t key = c0 + j * 8 + 2 * t + e % 2;
                    const bool visible = key < tile.key_end && key <= pos[i] && key >= first[i];
                    sc[j][e] = visible ? sc[j][e] : -INFINITY;
                    mx = fmaxf(mx, sc[j][e]);
                }
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
            const float m_new = fmaxf(m[i], mx);
            const float rescale = m_new == -INFINITY ? 1.0f : softmax_rescale(m[i], m_new);
            float sum = 0.0f;
            for (int j = 0; j < kKeys / 8; ++j)
                for (int e = 2 * i; e < 2 * i + 2; ++e) {
                    sc[j][e] = m_new == -INFINITY ? 0.0f : exp2f(sc[j][e] - m_new);
                    sum += sc[j][e];
                }
            l[i] = l[i] * rescale + sum;
            m[i] = m_new;
            for (int n = 0; n < kD / 8; ++n) {
                o[n][2 * i] *= rescale;
                o[n][2 * i + 1] *= rescale;
            }
        }

        // O += P V: P's A fragments are the S accumulators of key tiles 2 kk and 2 kk + 1.
        for (int kk = 0; kk < kKeys / 16; ++kk) {
            const uint32_t a0 = pack_bf16(sc[2 * kk][0], sc[2 * kk][1]);
            const uint32_t a1 = pack_bf16(sc[2 * kk][2], sc[2 * kk][3]);
            const uint32_t a2 = pack_bf16(sc[2 * kk + 1][0], sc[2 * kk + 1][1]);
            const uint32_t a3 = pack_bf16(sc[2 * kk + 1][2], sc[2 * kk + 1][3]);
            for (int n = 0; n < kD / 8; ++n) {
                if (n >= v_tiles) break;
                const uint16_t* v = vt + (n * 8 + g) * kVStride + kk * 16 + 2 * t;
                mma_bf16(o[n], a0, a1, a2, a3, word(v), word(v + 8));
            }
        }
    }

    for (int i = 0; i < 2; ++i) {
        float sum = l[i];
        sum += __shfl_xor_sync(0xffffffffu, sum, 1);
        sum += __shfl_xor_sync(0xffffffffu, sum, 2);
        const int64_t r = warp * 16 + g + i * 8;
        if (r >= rows) continue;
        const int64_t p = tile.t0 + r / tile.n_heads, h = tile.head0 + r % tile.n_heads;
        float* out = s.out + (p * s.n_heads + h) * s.v_dim;
        const float sink2 = sink_log2(s.sinks, h);
        for (int n = 0; n < kD / 8; ++n) {
            if (n >= v_tiles) break;
            *reinterpret_cast<float2*>(out + n * 8 + 2 * t) =
                make_float2(softmax_output(o[n][2 * i], sum, m[i], sink2),
                            softmax_output(o[n][2 * i + 1], sum, m[i], sink2));
        }
    }
}

template <int kD>
void launch(Context& ctx, const PrefillSequence* sequences, const AttentionTile* tiles,
            int64_t n_tiles) {
    constexpr size_t bytes = shared_bytes<kD>();
    // Above the 48 KiB default for kD = 128; under the 99 KiB of every target.
    static_assert(bytes <= 96 * 1024);
    TANDEM_CUDA_CHECK(cudaFuncSetAttribute(
        prefill_kernel<kD>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
    prefill_kernel<kD>
        <<<unsigned(n_tiles), kThreads, bytes, native_stream(ctx.stream())>>>(sequences, tiles);
    TANDEM_CUDA_CHECK_LAUNCH("prefill_kernel");
}

bool aligned16(const void* p) {
    return reinterpret_cast<uintptr_t>(p) % 16 == 0;
}

}  // namespace

bool prefill_supported(std::span<const AttentionArgs> sequences) {
    const auto dim_ok = [](int64_t d) { return d > 0 && d <= kPrefillMaxDim && d % 16 == 0; };
    const auto rows_ok = [&](const KvRows& r) {
        return dim_ok(r.head_dim) && r.pos_stride % 8 == 0 && r.head_stride % 8 == 0 &&
               r.block_stride % 8 == 0 && aligned16(r.base);
    };
    // An f32 cache is the precision choice (EngineConfig.kv_cache_type): its prefill stays on the
    // f32 kernel; f16 and bf16 caches are already rounded to 16 bits, the tensor cores' operands.
    for (const AttentionArgs& a : sequences)
        if (a.q.dim(0) < 2 || a.k_cache.dtype == DType::F32 || !rows_ok(a.k_cache) ||
            !rows_ok(a.v_cache) || a.q.dim(1) / a.k_cache.n_heads > kPrefillRows ||
            !aligned16(a.q.data()) || !aligned16(a.out.data()))
            return false;
    return !sequences.empty();
}

void attention_prefill(Context& ctx, std::span<const AttentionArgs> sequences) {
    std::vector<PrefillSequence> seqs;
    std::vector<AttentionShape> shapes;
    int64_t max_dim = 0;
    for (const AttentionArgs& a : sequences) {
        seqs.push_back(sequence_row(a));
        shapes.push_back(shape_of(a));
        max_dim = std::max({max_dim, a.q.dim(2), a.v_cache.head_dim});
    }
    const std::vector<AttentionTile> tiles = plan_prefill(shapes);
    if (tiles.empty()) return;
    // One table: the sequences, then the tiles at a 16-byte boundary. A few KiB per thousand
    // tiles; the pageable copy is staged by the driver and does not wait for the GPU.
    const size_t tile_offset = (seqs.size() * sizeof(PrefillSequence) + 15) / 16 * 16;
    std::vector<std::byte> table(tile_offset + tiles.size() * sizeof(AttentionTile));
    std::memcpy(table.data(), seqs.data(), seqs.size() * sizeof(PrefillSequence));
    std::memcpy(table.data() + tile_offset, tiles.data(), tiles.size() * sizeof(AttentionTile));
    auto* device =
        static_cast<std::byte*>(ctx.upload(ScratchSlot::Tables, table.data(), table.size()));
    const auto* device_seqs = reinterpret_cast<const PrefillSequence*>(device);
    const auto* device_tiles = reinterpret_cast<const AttentionTile*>(device + tile_offset);
    if (max_dim <= 64)
        launch<64>(ctx, device_seqs, device_tiles, int64_t(tiles.size()));
    else
        launch<128>(ctx, device_seqs, device_tiles, int64_t(tiles.size()));
}

}  // namespace tandem::cuda

// attention_decode() (attention.h): flash-decoding over the paged cache, one new token per
// sequence, near the HBM bandwidth.
//
// decode_kernel<kind, kGroup>: a block of 4 warps per (sequence, KV head, tile of kGroup of its
// query heads, split of the key range; plan_decode). Keys and values are read straight from the
// cache, never staged: a row is split over k_lanes lanes of 8 elements each (one 16-byte load of
// a 16-bit cache, two of an f32 one), so a warp reads 32 / k_lanes rows per step, and each lane
// issues four steps' loads before it uses any (kUnroll), so a block keeps ~8 KiB in flight.
//   1. Scores: each lane multiplies its 8 elements with the tile's queries (registers, scaled by
//      scale x log2 e), the k_lanes partial sums are added by xor shuffles, and the scores of the
//      split go to shared memory [kGroup, kDecodeMaxSplitKeys].
//   2. Softmax per query head over the split (one warp per head): max, 2^(s - max), sum.
//   3. Output: lanes own 8 value dims of a row, accumulate p x v over their rows, add across
//      the warp's rows (shuffles) and the warps (shared memory, reusing the scores' space).
// One split: the block divides and writes the output. Several: it writes a partial row (max,
// sum, unnormalised output; attention_math.h) and combine_kernel merges a head's splits.
// Limits: head_dim and v_dim multiples of 8 up to 256 and 16-byte aligned rows (decode_supported).
#include <algorithm>
#include <numbers>
#include <vector>

#include "kernels/cuda/attention.h"
#include "kernels/cuda/attention_math.h"
#include "kernels/cuda/attention_plan.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/tensor_checks.h"

namespace tandem::cuda {

namespace {

constexpr int kWarps = kDecodeWarps;
constexpr int kThreads = kWarps * 32;
constexpr int kUnroll = 4;
constexpr int64_t kMaxSplit = kDecodeMaxSplitKeys;
// The scores of kDecodeMaxGroup heads, and later the warps' outputs [kWarps, kGroup, v_dim].
constexpr int64_t kSharedFloats = kDecodeMaxGroup * kMaxSplit;
static_assert(kWarps * kDecodeMaxGroup * kAttentionMaxDim <= kSharedFloats);

struct RowLayout {
    int64_t block_size, pos_stride, head_stride, block_stride;
};

struct DecodeParams {
    const float* q;  // [batch, n_heads, head_dim]
    float* out;      // [batch, n_heads, v_dim]
    const DecodeSequence* sequences;
    RowLayout k, v;
    int n_heads, group, head_dim, v_dim, k_lanes, v_lanes, head_tiles, n_splits;
    int64_t split_keys, window;
    float q_scale;    // scale x log2(e)
    float* partials;  // [batch x n_heads, n_splits, partial_stride] when n_splits > 1
    int64_t partial_stride;
    const float* sinks;  // [n_heads] or null (attention_math.h, sink_log2)
};

// 8 consecutive elements of a row: one 16-byte load (f16, bf16) or two (f32).
template <FloatKind kKind>
struct Eight {
    static constexpr int kWords = kKind == FloatKind::F32 ? 2 : 1;
    uint4 w[kWords];
};

template <FloatKind kKind>
__device__ Eight<kKind> load_eight(const std::byte* base, int64_t element) {
    Eight<kKind> e;
    const auto* p =
        reinterpret_cast<const uint4*>(base + element * (kKind == FloatKind::F32 ? 4 : 2));
    for (int i = 0; i < Eight<kKind>::kWords; ++i)
        e.w[i] = __ldg(p + i);
    return e;
}

template <FloatKind kKind>
__device__ Eight<kKind> zero_eight() {
    Eight<kKind> e;
    for (int i = 0; i < Eight<kKind>::kWords; ++i)
        e.w[i] = make_uint4(0, 0, 0, 0);
    return e;
}

__device__ void halves(uint32_t bits, FloatKind kind, float* f) {
    if (kind == FloatKind::BF16) {
        f[0] = __uint_as_float(bits << 16);
        f[1] = __uint_as_float(bits & 0xffff0000u);
    } else {
        f[0] = f16_bits_to_f32(uint16_t(bits));
        f[1] = f16_bits_to_f32(uint16_t(bits >> 16));
    }
}

template <FloatKind kKind>
__device__ void to_floats(const Eight<kKind>& e, float* f) {
    if constexpr (kKind == FloatKind::F32) {
        const uint32_t* u = reinterpret_cast<const uint32_t*>(e.w);
        for (int i = 0; i < 8; ++i)
            f[i] = __uint_as_float(u[i]);
    } else {
        halves(e.w[0].x, kKind, f);
        halves(e.w[0].y, kKind, f + 2);
        halves(e.w[0].z, kKind, f + 4);
        halves(e.w[0].w, kKind, f + 6);
    }
}

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

__device__ KvView view(const void* base, const int32_t* blocks, const RowLayout& l,
                       FloatKind kind) {
    return {.base = static_cast<const std::byte*>(base),
            .block_table = blocks,
            .block_size = l.block_size,
            .pos_stride = l.pos_stride,
            .head_stride = l.head_stride,
            .block_stride = l.block_stride,
            .kind = kind,
            .aligned4 = true};
}

template <FloatKind kKind, int kGroup>
__global__ void __launch_bounds__(kThreads) decode_kernel(DecodeParams p) {
    __shared__ float shared[kSharedFloats];
    __shared__ float row_max[kGroup], row_sum[kGroup];
    const int split = int(blockIdx.x);
    const int kv_head = int(blockIdx.y) / p.head_tiles, tile = int(blockIdx.y) % p.head_tiles;
    const int64_t b = blockIdx.z;
    const int h0 = kv_head * p.group + tile * kGroup;
    const int n_g = min(kGroup, p.group - tile * kGroup);
    const int warp = int(threadIdx.x) / 32, lane = int(threadIdx.x) % 32;
    const DecodeSequence seq = p.sequences[b];
    const KeyRange range = decode_split_range(seq.position, p.window, split, p.split_keys);
    const int64_t n = range.end - range.begin;  // <= kMaxSplit

    // 1. Scores.
    {
        const KvView k = view(seq.k_base, seq.k_blocks, p.k, kKind);
        const int sub = lane / p.k_lanes, kpw = 32 / p.k_lanes;
        const int d0 = lane % p.k_lanes * 8;
        const bool has_dims = d0 < p.head_dim;
        float q[kGroup][8];
        for (int g = 0; g < kGroup; ++g) {
            const bool live = has_dims && g < n_g;
            const float4* row =
                reinterpret_cast<const float4*>(p.q + ((b * p.n_heads + h0 + g) * p.head_dim + d0));
            const float4 a = live ? row[0] : make_float4(0, 0, 0, 0);
            const float4 c = live ? row[1] : make_float4(0, 0, 0, 0);
            q[g][0] = a.x * p.q_scale, q[g][1] = a.y * p.q_scale, q[g][2] = a.z * p.q_scale;
            q[g][3] = a.w * p.q_scale, q[g][4] = c.x * p.q_scale, q[g][5] = c.y * p.q_scale;
            q[g][6] = c.z * p.q_scale, q[g][7] = c.w * p.q_scale;
        }
        const int64_t step = int64_t(kWarps) * kpw;
        for (int64_t i0 = 0; i0 < n; i0 += kUnroll * step) {
            Eight<kKind> raw[kUnroll];
            for (int u = 0; u < kUnroll; ++u) {
                const int64_t i = i0 + u * step + warp * kpw + sub;
                raw[u] =
                    i < n && has_dims
                        ? load_eight<kKind>(k.base, kv_element(k, range.begin + i, kv_head) + d0)
                        : zero_eight<kKind>();
            }
            for (int u = 0; u < kUnroll; ++u) {
                const int64_t i = i0 + u * step + warp * kpw + sub;
                float x[8];
                to_floats(raw[u], x);
                float s[kGroup];
                for (int g = 0; g < kGroup; ++g) {
                    s[g] = 0.0f;
                    for (int e = 0; e < 8; ++e)
                        s[g] += q[g][e] * x[e];
                    for (int offset = p.k_lanes / 2; offset > 0; offset /= 2)
                        s[g] += __shfl_xor_sync(0xffffffffu, s[g], offset);
                }
                if (lane % p.k_lanes == 0 && i < n)
                    for (int g = 0; g < kGroup; ++g)
                        if (g < n_g) shared[g * kMaxSplit + i] = s[g];
            }
        }
    }
    __syncthreads();

    // 2. Softmax of each head over the split, in base 2.
    for (int g = warp; g < n_g; g += kWarps) {
        float* s = shared + g * kMaxSplit;
        float m = -INFINITY;
        for (int64_t i = lane; i < n; i += 32)
            m = fmaxf(m, s[i]);
        m = warp_max(m);
        float sum = 0.0f;
        for (int64_t i = lane; i < n; i += 32) {
            const float e = exp2f(s[i] - m);
            s[i] = e;
            sum += e;
        }
        sum = warp_sum(sum);
        if (lane == 0) {
            row_max[g] = m;
            row_sum[g] = sum;
        }
    }
    __syncthreads();

    // 3. Output: p x v over the split's rows.
    const int sub = lane / p.v_lanes, kpw = 32 / p.v_lanes;
    const int d0 = lane % p.v_lanes * 8;
    const bool has_dims = d0 < p.v_dim;
    float acc[kGroup][8];
    for (int g = 0; g < kGroup; ++g)
        for (int e = 0; e < 8; ++e)
            acc[g][e] = 0.0f;
    {
        const KvView v = view(seq.v_base, seq.v_blocks, p.v, kKind);
        const int64_t step = int64_t(kWarps) * kpw;
        for (int64_t i0 = 0; i0 < n; i0 += kUnroll * step) {
            Eight<kKind> raw[kUnroll];
            for (int u = 0; u < kUnroll; ++u) {
                const int64_t i = i0 + u * step + warp * kpw + sub;
                raw[u] =
                    i < n && has_dims
                        ? load_eight<kKind>(v.base, kv_element(v, range.begin + i, kv_head) + d0)
                        : zero_eight<kKind>();
            }
            for (int u = 0; u < kUnroll; ++u) {
                const int64_t i = i0 + u * step + warp * kpw + sub;
                if (i >= n) continue;
                float x[8];
                to_floats(raw[u], x);
                for (int g = 0; g < kGroup; ++g) {
                    const float pg = g < n_g ? shared[g * kMaxSplit + i] : 0.0f;
                    for (int e = 0; e < 8; ++e)
                        acc[g][e] += pg * x[e];
                }
            }
        }
    }
    for (int offset = p.v_lanes; offset < 32; offset *= 2)
        for (int g = 0; g < kGroup; ++g)
            for (int e = 0; e < 8; ++e)
                acc[g][e] += __shfl_xor_sync(0xffffffffu, acc[g][e], offset);
    __syncthreads();  // the scores are consumed: their space takes the warps' outputs
    if (sub == 0 && has_dims)
        for (int g = 0; g < n_g; ++g)
            for (int e = 0; e < 8; ++e)
                shared[(warp * kGroup + g) * p.v_dim + d0 + e] = acc[g][e];
    __syncthreads();
    for (int idx = int(threadIdx.x); idx < n_g * p.v_dim; idx += kThreads) {
        const int g = idx / p.v_dim, d = idx % p.v_dim;
        float a = 0.0f;
        for (int w = 0; w < kWarps; ++w)
            a += shared[(w * kGroup + g) * p.v_dim + d];
        const int64_t row = b * p.n_heads + h0 + g;
        if (p.n_splits == 1) {
            p.out[row * p.v_dim + d] =
                softmax_output(a, row_sum[g], row_max[g], sink_log2(p.sinks, h0 + g));
        } else {
            float* partial = p.partials + (row * p.n_splits + split) * p.partial_stride;
            partial[PartialRow::kAcc + d] = a;
            if (d == 0) {
                partial[PartialRow::kMax] = row_max[g];
                partial[PartialRow::kSum] = row_sum[g];
            }
        }
    }
}

// One block per (sequence, query head): its output from the head's n_splits partial rows.
__global__ void decode_combine_kernel(float* out, const float* partials, int64_t partial_stride,
                                      int n_splits, int v_dim, int n_heads, const float* sinks) {
    const int64_t row = blockIdx.x;
    const float* first = partials + row * n_splits * partial_stride;
    const float sink2 = sink_log2(sinks, row % n_heads);
    for (int d = int(threadIdx.x); d < v_dim; d += int(blockDim.x))
        out[row * v_dim + d] = combine_partials(first, partial_stride, n_splits, d, sink2);
}

template <FloatKind kKind>
void launch_kind(Context& ctx, const DecodePlan& plan, const DecodeParams& p, dim3 grid) {
    const cudaStream_t stream = native_stream(ctx.stream());
    switch (plan.group_tile) {
        case 1: decode_kernel<kKind, 1><<<grid, kThreads, 0, stream>>>(p); break;
        case 2: decode_kernel<kKind, 2><<<grid, kThreads, 0, stream>>>(p); break;
        case 4: decode_kernel<kKind, 4><<<grid, kThreads, 0, stream>>>(p); break;
        default: decode_kernel<kKind, kDecodeMaxGroup><<<grid, kThreads, 0, stream>>>(p);
    }
    TANDEM_CUDA_CHECK_LAUNCH("decode_kernel");
}

// Why decode_supported says no, or null.
const char* unsupported(const DecodeAttentionArgs& a) {
    const KvLayout &k = a.k, &v = a.v;
    if (a.q.rank() != 3 || a.out.rank() != 3) return "q and out must be rank 3";
    if (k.dtype != v.dtype) return "keys and values must share a dtype";
    if (k.dtype != DType::F32 && k.dtype != DType::F16 && k.dtype != DType::BF16)
        return "the cache must be f32, f16 or bf16";
    if (!decode_dims_supported(k.head_dim, v.head_dim))
        return "head_dim and v_head_dim must be multiples of 8 up to 256";
    const auto aligned = [](const KvLayout& l) {
        // 8 elements from any row start must be whole 16-byte loads.
        return l.pos_stride % 8 == 0 && l.head_stride % 8 == 0 && l.block_stride % 8 == 0 &&
               l.block_size > 0;
    };
    if (!aligned(k) || !aligned(v)) return "row strides must be multiples of 8 elements";
    if (k.n_kv_heads == 0 || v.n_kv_heads != k.n_kv_heads || a.q.dim(1) % k.n_kv_heads != 0)
        return "query heads must be a multiple of the KV heads of keys and values";
    if (a.q.dim(2) != k.head_dim || a.out.dim(2) != v.head_dim || a.out.dim(0) != a.q.dim(0) ||
        a.out.dim(1) != a.q.dim(1))
        return "q [batch, n_heads, head_dim] and out [batch, n_heads, v_head_dim] disagree with "
               "the cache";
    if (reinterpret_cast<uintptr_t>(a.q.data()) % 16 != 0) return "q must be 16-byte aligned";
    return nullptr;
}

}  // namespace

KvLayout layout_of(const KvRows& rows) {
    return {.dtype = rows.dtype,
            .n_kv_heads = rows.n_heads,
            .head_dim = rows.head_dim,
            .block_size = rows.block_size,
            .pos_stride = rows.pos_stride,
            .head_stride = rows.head_stride,
            .block_stride = rows.block_stride};
}

bool decode_supported(const DecodeAttentionArgs& args) {
    return unsupported(args) == nullptr;
}

void attention_decode(Context& ctx, const DecodeAttentionArgs& a) {
    require_f32(a.q, 3, ctx.device(), "attention_decode", "q [batch, n_heads, head_dim]");
    require_f32(a.out, 3, ctx.device(), "attention_decode", "out [batch, n_heads, v_head_dim]");
    if (const char* why = unsupported(a))
        fail("attention_decode: ", why, " (q ", a.q.describe(), ", out ", a.out.describe(),
             ", keys ", a.k.n_kv_heads, " x ", a.k.head_dim, " ", dtype_name(a.k.dtype),
             ", values ", a.v.n_kv_heads, " x ", a.v.head_dim, " ", dtype_name(a.v.dtype), ")");
    if (a.sequences == nullptr) fail("attention_decode: no sequence table");
    if (a.max_keys < 1) fail("attention_decode: max_keys ", a.max_keys, " < 1");
    if (a.sliding_window < 0) fail("attention_decode: sliding window ", a.sliding_window, " < 0");
    const int64_t batch = a.q.dim(0), n_heads = a.q.dim(1), n_kv = a.k.n_kv_heads;
    const int64_t group = n_heads / n_kv;
    const int64_t max_keys =
        a.sliding_window > 0 ? std::min(a.max_keys, a.sliding_window) : a.max_keys;
    const DecodePlan plan = plan_decode(batch, n_kv, group, a.k.head_dim, a.v.head_dim, max_keys,
                                        ctx.multiprocessors());
    const int64_t partial_stride = PartialRow::kAcc + a.v.head_dim;
    float* partials = nullptr;
    if (plan.n_splits > 1)
        partials = static_cast<float*>(
            ctx.scratch(ScratchSlot::Attention,
                        size_t(batch * n_heads * plan.n_splits * partial_stride) * sizeof(float)));
    const auto rows = [](const KvLayout& l) {
        return RowLayout{.block_size = l.block_size,
                         .pos_stride = l.pos_stride,
                         .head_stride = l.head_stride,
                         .block_stride = l.block_stride};
    };
    const DecodeParams p{.q = a.q.data_as<const float>(),
                         .out = a.out.data_as<float>(),
                         .sequences = a.sequences,
                         .k = rows(a.k),
                         .v = rows(a.v),
                         .n_heads = int(n_heads),
                         .group = int(group),
                         .head_dim = int(a.k.head_dim),
                         .v_dim = int(a.v.head_dim),
                         .k_lanes = plan.k_lanes,
                         .v_lanes = plan.v_lanes,
                         .head_tiles = plan.head_tiles,
                         .n_splits = plan.n_splits,
                         .split_keys = plan.split_keys,
                         .window = a.sliding_window,
                         .q_scale = a.scale * std::numbers::log2e_v<float>,
                         .partials = partials,
                         .partial_stride = partial_stride,
                         .sinks = a.sinks};
    if (batch == 0) return;
    const dim3 grid(unsigned(plan.n_splits), unsigned(n_kv * plan.head_tiles), unsigned(batch));
    switch (a.k.dtype) {
        case DType::F32: launch_kind<FloatKind::F32>(ctx, plan, p, grid); break;
        case DType::F16: launch_kind<FloatKind::F16>(ctx, plan, p, grid); break;
        default: launch_kind<FloatKind::BF16>(ctx, plan, p, grid);
    }
    if (plan.n_splits == 1) return;
    decode_combine_kernel<<<unsigned(batch * n_heads), 128, 0, native_stream(ctx.stream())>>>(
        p.out, partials, partial_stride, plan.n_splits, p.v_dim, p.n_heads, p.sinks);
    TANDEM_CUDA_CHECK_LAUNCH("decode_combine_kernel");
}

}  // namespace tandem::cuda

// cuda::moe_experts (moe_experts.h). Scratch per call:
//   ExpertHidden  [n_slots, ffn_dim] f32 silu(gate)*up of every slot, then two [max_tokens,
//                 ffn_dim] buffers for the gate and up outputs of the GEMM-path experts
//   ExpertRows    [n_slots, hidden_dim] f32 each slot's down output (unweighted)
//   GatheredRows  [max_tokens, hidden_dim] f32 one GEMM-path expert's rows of x
//   Tables        the uploaded tables below, one copy per call, and the computed experts'
//                 biases (gpt-oss), which arrive in host memory
#include "kernels/cuda/moe_experts.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/gemv.cuh"
#include "kernels/cuda/glu_math.h"
#include "kernels/cuda/linear.h"
#include "kernels/cuda/weight_dispatch.cuh"

namespace tandem::cuda {

namespace {

// One expert of the grouped (GEMV) launches.
struct GroupEntry {
    const uint8_t* gate;  // [ffn_dim, hidden_dim]
    const uint8_t* up;    // [ffn_dim, hidden_dim]
    const uint8_t* down;  // [hidden_dim, ffn_dim]
    int32_t slot_begin;   // its slots are [slot_begin, slot_begin + n_tokens)
    int32_t n_tokens;     // 1 .. kGemvMaxTokens
    // Where its biases start in GroupedArgs::biases (gate, up: ffn_dim floats; down: hidden_dim),
    // or -1 for none.
    int32_t gate_bias = -1, up_bias = -1, down_bias = -1;
};

// A bias element, or 0 where the expert has none.
__device__ __forceinline__ float bias_at(const float* biases, int32_t at, int64_t i) {
    return at >= 0 ? biases[at + i] : 0.0f;
}

struct GroupedArgs {
    const GroupEntry* entries;   // [n_grouped]
    const int32_t* token_index;  // [n_slots]
    const float* x;              // [n_tokens, hidden_dim]
    int64_t hidden, ffn;
    int64_t gate_row_bytes, down_row_bytes;
    float* hidden_rows;  // [n_slots, ffn_dim]
    float* down_rows;    // [n_slots, hidden_dim]
    // Quantized gate/up weights: x as 8-bit blocks (quant_dot.h), dotted by integer arithmetic.
    const int8_t* xq;  // [n_tokens, hidden_dim]
    const float* xd;   // [n_tokens, hidden_dim / 32]
    // The gated activation (glu_math.h) and the biases the entries point into (null: none).
    float limit = 0.0f, alpha = 1.0f;
    const float* biases = nullptr;
};

// blockIdx.y: the expert; warps: ffn rows, the gate row and the up row sharing each activation
// load. hidden_rows[slot] = act(gate · x + gate bias, up · x + up bias), act of glu_math.h.
// Quantized gate/up weights dot x's 8-bit blocks (a.xq, a.xd) as linear's GEMV does; the down
// kernel keeps f32 intermediates (quantizing them would take one more launch between the two).
template <DType T, int kMaxTokens>
__global__ void __launch_bounds__(kGemvThreads) gate_up_kernel(GroupedArgs a) {
    const GroupEntry e = a.entries[blockIdx.y];
    if (e.n_tokens == 0) return;  // moe_experts_routed launches over every expert
    const int64_t row = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarpSize;
    if (row >= a.ffn) return;
    int64_t tokens[kMaxTokens];
#pragma unroll
    for (int t = 0; t < kMaxTokens; ++t)
        tokens[t] = a.token_index[e.slot_begin + (t < e.n_tokens ? t : 0)];
    const uint8_t* const rows[2] = {e.gate + row * a.gate_row_bytes, e.up + row * a.gate_row_bytes};
    float acc[2][kMaxTokens] = {};
    if constexpr (T != DType::F32 && T != DType::F16 && T != DType::BF16) {
        const int8_t* xqs[kMaxTokens];
        const float* xds[kMaxTokens];
#pragma unroll
        for (int t = 0; t < kMaxTokens; ++t) {
            xqs[t] = a.xq + tokens[t] * a.hidden;
            xds[t] = a.xd + tokens[t] * (a.hidden / kQ8Block);
        }
        lane_rows_dot_q8<T, kMaxTokens, 2>(rows, a.hidden / kChunk, xqs, xds, e.n_tokens, acc);
    } else {
        const float* xs[kMaxTokens];
#pragma unroll
        for (int t = 0; t < kMaxTokens; ++t)
            xs[t] = a.x + tokens[t] * a.hidden;
        lane_rows_dot<T, kMaxTokens, 2>(rows, a.hidden / kChunk, xs, e.n_tokens, acc);
    }
    const float gate_bias = bias_at(a.biases, e.gate_bias, row);
    const float up_bias = bias_at(a.biases, e.up_bias, row);
#pragma unroll
    for (int t = 0; t < kMaxTokens; ++t) {
        const float g = warp_sum(acc[0][t]) + gate_bias, u = warp_sum(acc[1][t]) + up_bias;
        if ((threadIdx.x & (kWarpSize - 1)) == 0 && t < e.n_tokens)
            a.hidden_rows[(e.slot_begin + t) * a.ffn + row] =
                gated_activation(g, u, a.limit, a.alpha);
    }
}

// blockIdx.y: the expert; warps: kRowsPerWarp hidden rows each.
// down_rows[slot] = down · hidden_rows[slot] + down bias.
template <DType T, int kMaxTokens>
__global__ void __launch_bounds__(kGemvThreads) down_kernel(GroupedArgs a) {
    const GroupEntry e = a.entries[blockIdx.y];
    if (e.n_tokens == 0) return;
    const int64_t first =
        (int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarpSize) * kRowsPerWarp;
    if (first >= a.hidden) return;
    const uint8_t* rows[kRowsPerWarp];
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r)  // past the last row: read the last, write nothing
        rows[r] = e.down + (first + r < a.hidden ? first + r : a.hidden - 1) * a.down_row_bytes;
    const float* xs[kMaxTokens];
#pragma unroll
    for (int t = 0; t < kMaxTokens; ++t)
        xs[t] = a.hidden_rows + (e.slot_begin + (t < e.n_tokens ? t : 0)) * a.ffn;
    float acc[kRowsPerWarp][kMaxTokens] = {};
    lane_rows_dot<T, kMaxTokens, kRowsPerWarp>(rows, a.ffn / kChunk, xs, e.n_tokens, acc);
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) {
        const int64_t row = first + r;
        const float bias = row < a.hidden ? bias_at(a.biases, e.down_bias, row) : 0.0f;
#pragma unroll
        for (int t = 0; t < kMaxTokens; ++t) {
            const float sum = warp_sum(acc[r][t]) + bias;
            if ((threadIdx.x & (kWarpSize - 1)) == 0 && t < e.n_tokens && row < a.hidden)
                a.down_rows[(e.slot_begin + t) * a.hidden + row] = sum;
        }
    }
}

// The grouped launches, gate+up then down, instantiated for the weight types and for one token
// per expert or up to kGemvMaxTokens (the decode case gets registers sized for one).
void launch_grouped(DType gate_type, DType down_type, int max_tokens, dim3 gate_grid,
                    dim3 down_grid, const GroupedArgs& args, cudaStream_t stream) {
    const auto for_tokens = [&](auto launch) {
        if (max_tokens == 1)
            launch(std::integral_constant<int, 1>{});
        else
            launch(std::integral_constant<int, kGemvMaxTokens>{});
    };
    with_weight_type(gate_type, [&](auto type) {
        for_tokens([&](auto tokens) {
            gate_up_kernel<decltype(type)::value, decltype(tokens)::value>
                <<<gate_grid, kGemvThreads, 0, stream>>>(args);
        });
    });
    TANDEM_CUDA_CHECK_LAUNCH("gate_up_kernel");
    with_weight_type(down_type, [&](auto type) {
        for_tokens([&](auto tokens) {
            down_kernel<decltype(type)::value, decltype(tokens)::value>
                <<<down_grid, kGemvThreads, 0, stream>>>(args);
        });
    });
    TANDEM_CUDA_CHECK_LAUNCH("down_kernel");
}

// rows[i] = x[token_index[slot_begin + i]] for one GEMM-path expert.
__global__ void gather_kernel(const float* x, const int32_t* token_index, int32_t slot_begin,
                              int64_t n_rows, int64_t hidden, float* rows) {
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n_rows * hidden;
         i += int64_t(gridDim.x) * blockDim.x)
        rows[i] = x[int64_t(token_index[slot_begin + i / hidden]) * hidden + i % hidden];
}

// out = act(gate, up) elementwise (glu_math.h); the biases are in gate and up already.
__global__ void gated_activation_kernel(const float* gate, const float* up, int64_t n, float limit,
                                        float alpha, float* out) {
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
         i += int64_t(gridDim.x) * blockDim.x)
        out[i] = gated_activation(gate[i], up[i], limit, alpha);
}

// out[t] += Σ weight[s] · down_rows[s] over token t's slots, in slot order.
__global__ void combine_kernel(const float* down_rows, const int32_t* token_slot_offsets,
                               const int32_t* token_slots, const float* slot_weight,
                               int64_t n_tokens, int64_t hidden, float* out) {
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n_tokens * hidden;
         i += int64_t(gridDim.x) * blockDim.x) {
        const int64_t t = i / hidden, c = i % hidden;
        float sum = out[i];
        for (int32_t j = token_slot_offsets[t]; j < token_slot_offsets[t + 1]; ++j) {
            const int32_t s = token_slots[j];
            sum = fmaf(slot_weight[s], down_rows[int64_t(s) * hidden + c], sum);
        }
        out[i] = sum;
    }
}

// The tables moe_experts() builds on the host, built on the device from cuda::route's output by
// one thread: a decode step has at most kMaxRoutedSlots slots, so this is a few hundred steps.
// entries: a copy of the layer's table with each expert's slot range; slots grouped by expert,
// tokens in order within one; per token its slots in ascending order.
struct RoutedTables {
    GroupEntry* entries;          // [n_experts]
    int32_t* token_index;         // [n_slots]
    float* slot_weight;           // [n_slots]
    int32_t* token_slot_offsets;  // [n_tokens + 1]
    int32_t* token_slots;         // [n_slots]
    int32_t* counts;              // [n_experts] work space
};

__global__ void build_routed_tables_kernel(const ExpertTableEntry* table, int32_t n_experts,
                                           const int32_t* ids, const float* weights,
                                           int32_t n_tokens, int32_t k, RoutedTables out) {
    for (int32_t e = threadIdx.x; e < n_experts; e += blockDim.x) {
        out.entries[e] = {.gate = static_cast<const uint8_t*>(table[e].gate),
                          .up = static_cast<const uint8_t*>(table[e].up),
                          .down = static_cast<const uint8_t*>(table[e].down),
                          .slot_begin = 0,
                          .n_tokens = 0};
        out.counts[e] = 0;
    }
    __syncthreads();
    if (threadIdx.x != 0) return;
    // An expert with no weights here (a writable table's expert left to the CPU) takes no slot.
    auto here = [&](int32_t e) { return e >= 0 && e < n_experts && out.entries[e].gate; };
    const int32_t n_slots = n_tokens * k;
    for (int32_t s = 0; s < n_slots; ++s)
        if (here(ids[s])) ++out.counts[ids[s]];
    int32_t begin = 0;
    for (int32_t e = 0; e < n_experts; ++e) {
        out.entries[e].slot_begin = begin;
        out.entries[e].n_tokens = out.counts[e];
        begin += out.counts[e];
        out.counts[e] = 0;  // from here: slots of e assigned so far
    }
    // Token-major order visits each expert's tokens in token order.
    int32_t filled = 0;
    for (int32_t t = 0; t < n_tokens; ++t) {
        out.token_slot_offsets[t] = filled;
        for (int32_t j = 0; j < k; ++j) {
            const int32_t e = ids[t * k + j];
            if (!here(e)) continue;
            const int32_t slot = out.entries[e].slot_begin + out.counts[e]++;
            out.token_index[slot] = t;
            out.slot_weight[slot] = weights[t * k + j];
            // Insert in ascending slot order among this token's slots.
            int32_t i = filled++;
            while (i > out.token_slot_offsets[t] && out.token_slots[i - 1] > slot) {
                out.token_slots[i] = out.token_slots[i - 1];
                --i;
            }
            out.token_slots[i] = slot;
        }
    }
    out.token_slot_offsets[n_tokens] = filled;
}

unsigned stride_blocks(const Context& ctx, int64_t n, int threads) {
    const int64_t cap = int64_t(ctx.multiprocessors()) * 16;
    const int64_t want = std::max<int64_t>(1, (n + threads - 1) / threads);
    return unsigned(std::min(want, cap));
}

// Appends `count` items to a byte blob at an 8-byte aligned offset, returning the offset.
template <class T>
size_t append(std::vector<uint8_t>& blob, const T* items, size_t count) {
    const size_t offset = (blob.size() + 7) / 8 * 8;
    blob.resize(offset + count * sizeof(T));
    if (count > 0) std::memcpy(blob.data() + offset, items, count * sizeof(T));
    return offset;
}

void check_args(const Context& ctx, const MoeExpertsArgs& a) {
    if (a.x.rank() != 2 || a.x.dtype() != DType::F32 || !a.x.is_contiguous() ||
        !(a.x.device() == ctx.device()))
        fail("cuda::moe_experts: x must be [n_tokens, hidden_dim] f32 contiguous on ",
             ctx.device().name(), ", got ", a.x.describe(), " on ", a.x.device().name());
    if (!(a.out.shape() == a.x.shape()) || a.out.dtype() != DType::F32 || !a.out.is_contiguous() ||
        !(a.out.device() == ctx.device()))
        fail("cuda::moe_experts: out must be ", a.x.shape().str(), " f32 contiguous on ",
             ctx.device().name(), ", got ", a.out.describe(), " on ", a.out.device().name());
    const size_t n_experts = a.experts.size();
    if (a.offsets.size() != n_experts + 1)
        fail("cuda::moe_experts: offsets has ", a.offsets.size(), " entries, expected ",
             n_experts + 1);
    if (!a.skip.empty() && a.skip.size() != n_experts)
        fail("cuda::moe_experts: skip has ", a.skip.size(), " entries, expected 0 or ", n_experts);
    if (a.offsets[0] != 0) fail("cuda::moe_experts: offsets[0] is ", a.offsets[0], ", not 0");
    for (size_t e = 0; e < n_experts; ++e)
        if (a.offsets[e + 1] < a.offsets[e])
            fail("cuda::moe_experts: offsets decrease at expert ", e);
    const size_t n_slots = size_t(a.offsets[n_experts]);
    if (a.token_index.size() != n_slots || a.token_weight.size() != n_slots)
        fail("cuda::moe_experts: ", n_slots, " slots but ", a.token_index.size(),
             " token indices and ", a.token_weight.size(), " weights");
    for (size_t s = 0; s < n_slots; ++s)
        if (a.token_index[s] < 0 || a.token_index[s] >= a.x.dim(0))
            fail("cuda::moe_experts: slot ", s, " names token ", a.token_index[s], " of ",
                 a.x.dim(0));
    if (!std::isfinite(a.glu.limit) || !std::isfinite(a.glu.alpha))
        fail("cuda::moe_experts: activation limit ", a.glu.limit, " and alpha ", a.glu.alpha,
             " must be finite");
}

// Appends an expert's bias (host f32 [n], or empty) to `biases`; its start, or -1 for none.
int32_t add_bias(std::vector<float>& biases, const Tensor& bias, int64_t n,
                 const std::string& what) {
    if (bias.empty()) return -1;
    if (bias.rank() != 1 || bias.dim(0) != n || bias.dtype() != DType::F32 ||
        !bias.is_contiguous() || !bias.device().is_cpu())
        fail(what, ": expected an f32 [", n, "] in host memory (uploaded with the call), found ",
             bias.describe(), " on ", bias.device().name());
    if (biases.size() + size_t(n) > size_t(INT32_MAX))
        fail("cuda::moe_experts: the call's expert biases exceed 2^31 floats");
    const auto at = int32_t(biases.size());
    biases.insert(biases.end(), bias.data_as<const float>(), bias.data_as<const float>() + n);
    return at;
}

}  // namespace

void moe_experts(Context& ctx, const MoeExpertsArgs& a) {
    check_args(ctx, a);
    const int64_t n_tokens = a.x.dim(0), hidden = a.x.dim(1);
    const size_t n_experts = a.experts.size();
    const auto active = [&](size_t e) {
        return a.offsets[e + 1] > a.offsets[e] && (a.skip.empty() || a.skip[e] == 0);
    };

    // The layer's shapes and types, from its first active expert; every active one must match.
    int64_t ffn = -1;
    DType gate_type = DType::F32, down_type = DType::F32;
    std::vector<GroupEntry> grouped;
    std::vector<std::pair<size_t, GroupEntry>> gemm_experts;  // an expert and its bias offsets
    std::vector<float> biases;
    int max_grouped_tokens = 0;
    int64_t max_gemm_tokens = 0;
    for (size_t e = 0; e < n_experts; ++e) {
        if (!active(e)) continue;
        const cpu::ExpertWeights& w = a.experts[e];
        if (ffn < 0) {
            ffn = w.gate.rank() == 2 ? w.gate.dim(0) : -1;
            gate_type = w.gate.dtype();
            down_type = w.down.dtype();
        }
        const std::string name = "cuda::moe_experts: expert " + std::to_string(e);
        check_weight(ctx, w.gate, ffn, hidden, (name + " gate").c_str());
        check_weight(ctx, w.up, ffn, hidden, (name + " up").c_str());
        check_weight(ctx, w.down, hidden, ffn, (name + " down").c_str());
        if (w.gate.dtype() != gate_type || w.up.dtype() != gate_type || w.down.dtype() != down_type)
            fail(name, " has gate/up/down ", dtype_name(w.gate.dtype()), "/",
                 dtype_name(w.up.dtype()), "/", dtype_name(w.down.dtype()),
                 "; the layer's first expert has ", dtype_name(gate_type), "/",
                 dtype_name(gate_type), "/", dtype_name(down_type),
                 " (one gate/up type and one down type per layer)");
        const int32_t count = a.offsets[e + 1] - a.offsets[e];
        GroupEntry entry{.gate = w.gate.data_as<const uint8_t>(),
                         .up = w.up.data_as<const uint8_t>(),
                         .down = w.down.data_as<const uint8_t>(),
                         .slot_begin = a.offsets[e],
                         .n_tokens = count,
                         .gate_bias = add_bias(biases, w.gate_bias, ffn, name + " gate bias"),
                         .up_bias = add_bias(biases, w.up_bias, ffn, name + " up bias"),
                         .down_bias = add_bias(biases, w.down_bias, hidden, name + " down bias")};
        if (count <= kGemvMaxTokens) {
            grouped.push_back(entry);
            max_grouped_tokens = std::max(max_grouped_tokens, int(count));
        } else {
            gemm_experts.push_back({e, entry});
            max_gemm_tokens = std::max(max_gemm_tokens, int64_t(count));
        }
    }
    if (ffn < 0) return;  // nothing to compute here
    if (!grouped.empty() && (hidden % kChunk != 0 || ffn % kChunk != 0 ||
                             reinterpret_cast<uintptr_t>(a.x.data()) % 16 != 0))
        fail("cuda::moe_experts: hidden_dim ", hidden, " and ffn_dim ", ffn,
             " must be multiples of 8 and x 16-byte aligned for the grouped kernels");
    if (!grouped.empty() && !is_quantized_weight_type(gate_type)) {
        for (const GroupEntry& g : grouped)
            for (const uint8_t* p : {g.gate, g.up, g.down})
                if (reinterpret_cast<uintptr_t>(p) % 16 != 0)
                    fail("cuda::moe_experts: float expert weights must be 16-byte aligned");
    }

    // Per-token lists of the computed slots, in slot order, for the deterministic sum.
    const int64_t n_slots = a.offsets[n_experts];
    std::vector<int32_t> token_slot_offsets(size_t(n_tokens) + 1, 0), token_slots;
    std::vector<std::vector<int32_t>> per_token(static_cast<size_t>(n_tokens));
    for (size_t e = 0; e < n_experts; ++e)
        if (active(e))
            for (int32_t s = a.offsets[e]; s < a.offsets[e + 1]; ++s)
                per_token[size_t(a.token_index[size_t(s)])].push_back(s);
    for (int64_t t = 0; t < n_tokens; ++t) {
        std::sort(per_token[size_t(t)].begin(), per_token[size_t(t)].end());
        token_slots.insert(token_slots.end(), per_token[size_t(t)].begin(),
                           per_token[size_t(t)].end());
        token_slot_offsets[size_t(t) + 1] = int32_t(token_slots.size());
    }

    std::vector<uint8_t> blob;
    const size_t entries_at = append(blob, grouped.data(), grouped.size());
    const size_t token_index_at = append(blob, a.token_index.data(), a.token_index.size());
    const size_t offsets_at = append(blob, token_slot_offsets.data(), token_slot_offsets.size());
    const size_t slots_at = append(blob, token_slots.data(), token_slots.size());
    const size_t weights_at = append(blob, a.token_weight.data(), a.token_weight.size());
    const size_t biases_at = append(blob, biases.data(), biases.size());

    // Scratch first (growing a slot synchronizes), the upload last, then only launches.
    const int64_t hidden_rows_floats = n_slots * ffn, gemm_floats = max_gemm_tokens * ffn;
    auto* hidden_rows = static_cast<float*>(ctx.scratch(
        ScratchSlot::ExpertHidden, size_t(hidden_rows_floats + 2 * gemm_floats) * sizeof(float)));
    float* gemm_gate = hidden_rows + hidden_rows_floats;
    float* gemm_up = gemm_gate + gemm_floats;
    auto* down_rows = static_cast<float*>(
        ctx.scratch(ScratchSlot::ExpertRows, size_t(n_slots * hidden) * sizeof(float)));
    auto* gathered = static_cast<float*>(ctx.scratch(
        ScratchSlot::GatheredRows, size_t(std::max<int64_t>(1, max_gemm_tokens * hidden)) * 4));
    const bool q8_x = !grouped.empty() && is_quantized_weight_type(gate_type);
    const int64_t x_blocks = q8_x ? n_tokens * hidden / kQ8Block : 0;
    const size_t xq_bytes = size_t(n_tokens * hidden + 255) / 256 * 256;
    auto* xq = q8_x ? static_cast<int8_t*>(
                          ctx.scratch(ScratchSlot::ActivationQ8, xq_bytes + size_t(x_blocks) * 4))
                    : nullptr;
    float* xd =
        q8_x ? reinterpret_cast<float*>(reinterpret_cast<uint8_t*>(xq) + xq_bytes) : nullptr;
    auto* tables = static_cast<uint8_t*>(ctx.upload(ScratchSlot::Tables, blob.data(), blob.size()));
    const auto* token_index = reinterpret_cast<const int32_t*>(tables + token_index_at);
    const float* device_biases =
        biases.empty() ? nullptr : reinterpret_cast<const float*>(tables + biases_at);
    auto stream = static_cast<cudaStream_t>(ctx.native_stream());
    constexpr int kThreads = 256;

    if (!grouped.empty()) {
        const GroupedArgs args{.entries = reinterpret_cast<const GroupEntry*>(tables + entries_at),
                               .token_index = token_index,
                               .x = a.x.data_as<const float>(),
                               .hidden = hidden,
                               .ffn = ffn,
                               .gate_row_bytes = row_bytes(gate_type, hidden),
                               .down_row_bytes = row_bytes(down_type, ffn),
                               .hidden_rows = hidden_rows,
                               .down_rows = down_rows,
                               .xq = xq,
                               .xd = xd,
                               .limit = a.glu.limit,
                               .alpha = a.glu.alpha,
                               .biases = device_biases};
        // hidden is whole blocks of 32 for quantized gate/up weights (check_weight).
        if (q8_x) launch_quantize_q8(a.x.data_as<const float>(), x_blocks, xq, xd, stream);
        const unsigned n_grouped = unsigned(grouped.size());
        const dim3 gate_grid(blocks_for(ffn, kWarpsPerBlock), n_grouped);
        const dim3 down_grid(blocks_for(hidden, kWarpsPerBlock * kRowsPerWarp), n_grouped);
        launch_grouped(gate_type, down_type, max_grouped_tokens, gate_grid, down_grid, args,
                       stream);
    }

    const Device device = ctx.device();
    // A bias of the uploaded ones as a device tensor (empty for none), for cuda::linear.
    const auto bias_tensor = [&](int32_t at, int64_t n) {
        return at < 0 ? Tensor()
                      : Tensor(const_cast<float*>(device_biases) + at, DType::F32, {n}, device);
    };
    for (const auto& [e, entry] : gemm_experts) {
        const cpu::ExpertWeights& w = a.experts[e];
        const int32_t begin = a.offsets[e];
        const int64_t count = a.offsets[e + 1] - begin;
        gather_kernel<<<stride_blocks(ctx, count * hidden, kThreads), kThreads, 0, stream>>>(
            a.x.data_as<const float>(), token_index, begin, count, hidden, gathered);
        TANDEM_CUDA_CHECK_LAUNCH("gather_kernel");
        const Tensor rows(gathered, DType::F32, {count, hidden}, device);
        const Tensor gate(gemm_gate, DType::F32, {count, ffn}, device);
        const Tensor up(gemm_up, DType::F32, {count, ffn}, device);
        linear(ctx, rows, w.gate, bias_tensor(entry.gate_bias, ffn), gate);
        linear(ctx, rows, w.up, bias_tensor(entry.up_bias, ffn), up);
        float* h = hidden_rows + int64_t(begin) * ffn;
        gated_activation_kernel<<<stride_blocks(ctx, count * ffn, kThreads), kThreads, 0, stream>>>(
            gemm_gate, gemm_up, count * ffn, a.glu.limit, a.glu.alpha, h);
        TANDEM_CUDA_CHECK_LAUNCH("gated_activation_kernel");
        linear(ctx, Tensor(h, DType::F32, {count, ffn}, device), w.down,
               bias_tensor(entry.down_bias, hidden),
               Tensor(down_rows + int64_t(begin) * hidden, DType::F32, {count, hidden}, device));
    }

    combine_kernel<<<stride_blocks(ctx, n_tokens * hidden, kThreads), kThreads, 0, stream>>>(
        down_rows, reinterpret_cast<const int32_t*>(tables + offsets_at),
        reinterpret_cast<const int32_t*>(tables + slots_at),
        reinterpret_cast<const float*>(tables + weights_at), n_tokens, hidden,
        a.out.data_as<float>());
    TANDEM_CUDA_CHECK_LAUNCH("combine_kernel");
}

DeviceExpertTable::DeviceExpertTable(Context& ctx, std::span<const cpu::ExpertWeights> experts)
    : n_experts_(int64_t(experts.size())) {
    if (experts.empty()) fail("cuda::DeviceExpertTable: no experts");
    const cpu::ExpertWeights& first = experts[0];
    if (first.gate.rank() != 2) fail("cuda::DeviceExpertTable: expert 0 has no gate weights");
    ffn_ = first.gate.dim(0);
    hidden_ = first.gate.dim(1);
    gate_type_ = first.gate.dtype();
    down_type_ = first.down.dtype();
    if (hidden_ % kChunk != 0 || ffn_ % kChunk != 0)
        fail("cuda::DeviceExpertTable: hidden_dim ", hidden_, " and ffn_dim ", ffn_,
             " must be multiples of 8 for the grouped kernels");
    std::vector<ExpertTableEntry> entries;
    for (size_t e = 0; e < experts.size(); ++e) {
        const cpu::ExpertWeights& w = experts[e];
        const std::string name = "cuda::DeviceExpertTable: expert " + std::to_string(e);
        check_weight(ctx, w.gate, ffn_, hidden_, (name + " gate").c_str());
        check_weight(ctx, w.up, ffn_, hidden_, (name + " up").c_str());
        check_weight(ctx, w.down, hidden_, ffn_, (name + " down").c_str());
        if (w.gate.dtype() != gate_type_ || w.up.dtype() != gate_type_ ||
            w.down.dtype() != down_type_)
            fail(name, ": one gate/up type and one down type per layer");
        if (w.has_bias())
            fail(name, ": expert biases (gpt-oss) are not in a device table; use moe_experts");
        if (!is_quantized_weight_type(gate_type_))
            for (const Tensor* t : {&w.gate, &w.up, &w.down})
                if (reinterpret_cast<uintptr_t>(t->data()) % 16 != 0)
                    fail(name, ": float expert weights must be 16-byte aligned");
        entries.push_back({.gate = w.gate.data(), .up = w.up.data(), .down = w.down.data()});
    }
    owned_ = allocate(ctx.device(), entries.size() * sizeof(ExpertTableEntry));
    // Once, at load: a synchronous copy (the host vector goes out of scope).
    TANDEM_CUDA_CHECK(cudaMemcpy(owned_.data(), entries.data(),
                                 entries.size() * sizeof(ExpertTableEntry),
                                 cudaMemcpyHostToDevice));
    entries_ = static_cast<const ExpertTableEntry*>(owned_.data());
}

DeviceExpertTable::DeviceExpertTable(const ExpertTableEntry* entries, int64_t n_experts,
                                     int64_t hidden_dim, int64_t ffn_dim, DType gate_type,
                                     DType down_type)
    : entries_(entries),
      n_experts_(n_experts),
      hidden_(hidden_dim),
      ffn_(ffn_dim),
      gate_type_(gate_type),
      down_type_(down_type) {
    if (entries == nullptr || n_experts <= 0 || reinterpret_cast<uintptr_t>(entries) % 8 != 0)
        fail("cuda::DeviceExpertTable: a writable table needs 8-byte aligned entries for ",
             n_experts, " experts");
    if (hidden_ % kChunk != 0 || ffn_ % kChunk != 0)
        fail("cuda::DeviceExpertTable: hidden_dim ", hidden_, " and ffn_dim ", ffn_,
             " must be multiples of 8 for the grouped kernels");
}

bool writable_table_supported(const cpu::ExpertWeights& like) {
    if (like.gate.rank() != 2 || like.up.rank() != 2 || like.down.rank() != 2) return false;
    const int64_t ffn = like.gate.dim(0), hidden = like.gate.dim(1);
    bool types = true;
    for (const Tensor* t : {&like.gate, &like.down}) {
        try {
            with_weight_type(t->dtype(), [](auto) {});
        } catch (const Error&) {
            types = false;
        }
    }
    return types && !like.has_bias() && hidden % kChunk == 0 && ffn % kChunk == 0 &&
           like.up.dtype() == like.gate.dtype() && like.down.dim(0) == hidden &&
           like.down.dim(1) == ffn;
}

void moe_experts_routed(Context& ctx, const DeviceExpertTable& table, const MoeRoutedArgs& a) {
    const int64_t hidden = table.hidden_dim(), ffn = table.ffn_dim();
    if (a.x.rank() != 2 || a.x.dim(1) != hidden || a.x.dtype() != DType::F32 ||
        !a.x.is_contiguous() || !(a.x.device() == ctx.device()) ||
        reinterpret_cast<uintptr_t>(a.x.data()) % 16 != 0)
        fail("cuda::moe_experts_routed: x must be [n_tokens, ", hidden,
             "] f32, contiguous, 16-byte aligned on ", ctx.device().name(), ", got ",
             a.x.describe());
    const int64_t n_tokens = a.x.dim(0);
    if (!(a.out.shape() == a.x.shape()) || a.out.dtype() != DType::F32 || !a.out.is_contiguous() ||
        !(a.out.device() == ctx.device()))
        fail("cuda::moe_experts_routed: out must be ", a.x.shape().str(), " f32 on ",
             ctx.device().name(), ", got ", a.out.describe());
    const int64_t k = a.expert_ids.rank() == 2 ? a.expert_ids.dim(1) : 0;
    if (a.expert_ids.rank() != 2 || a.expert_ids.dim(0) != n_tokens ||
        a.expert_ids.dtype() != DType::I32 || !(a.expert_ids.device() == ctx.device()) ||
        !(a.expert_weights.shape() == a.expert_ids.shape()) ||
        a.expert_weights.dtype() != DType::F32 || !(a.expert_weights.device() == ctx.device()))
        fail("cuda::moe_experts_routed: expert_ids [", n_tokens, ", k] i32 and expert_weights [",
             n_tokens, ", k] f32 on ", ctx.device().name(), " expected, got ",
             a.expert_ids.describe(), " and ", a.expert_weights.describe());
    if (n_tokens > kGemvMaxTokens || n_tokens * k > kMaxRoutedSlots)
        fail("cuda::moe_experts_routed: ", n_tokens, " tokens x top-", k, " exceed ",
             kGemvMaxTokens, " tokens or ", kMaxRoutedSlots, " slots; use moe_experts");
    if (n_tokens == 0 || k == 0) return;
    const int64_t n_slots = n_tokens * k, n_experts = table.n_experts();

    // Scratch: the tables, then the per-slot rows, then x's 8-bit blocks.
    auto bytes_of = [](int64_t n, size_t size) { return (size_t(n) * size + 255) / 256 * 256; };
    const size_t entries_bytes = bytes_of(n_experts, sizeof(GroupEntry));
    const size_t slot_bytes = bytes_of(n_slots, 4), token_bytes = bytes_of(n_tokens + 1, 4),
                 count_bytes = bytes_of(n_experts, 4);
    auto* t = static_cast<uint8_t*>(ctx.scratch(
        ScratchSlot::Tables, entries_bytes + 3 * slot_bytes + token_bytes + count_bytes));
    RoutedTables tables{};
    tables.entries = reinterpret_cast<GroupEntry*>(t);
    tables.token_index = reinterpret_cast<int32_t*>(t + entries_bytes);
    tables.slot_weight = reinterpret_cast<float*>(t + entries_bytes + slot_bytes);
    tables.token_slots = reinterpret_cast<int32_t*>(t + entries_bytes + 2 * slot_bytes);
    tables.token_slot_offsets = reinterpret_cast<int32_t*>(t + entries_bytes + 3 * slot_bytes);
    tables.counts = reinterpret_cast<int32_t*>(t + entries_bytes + 3 * slot_bytes + token_bytes);
    auto* hidden_rows = static_cast<float*>(
        ctx.scratch(ScratchSlot::ExpertHidden, size_t(n_slots * ffn) * sizeof(float)));
    auto* down_rows = static_cast<float*>(
        ctx.scratch(ScratchSlot::ExpertRows, size_t(n_slots * hidden) * sizeof(float)));
    const bool q8_x = is_quantized_weight_type(table.gate_type());
    const int64_t x_blocks = q8_x ? n_tokens * hidden / kQ8Block : 0;
    const size_t xq_bytes = size_t(n_tokens * hidden + 255) / 256 * 256;
    auto* xq = q8_x ? static_cast<int8_t*>(
                          ctx.scratch(ScratchSlot::ActivationQ8, xq_bytes + size_t(x_blocks) * 4))
                    : nullptr;
    float* xd =
        q8_x ? reinterpret_cast<float*>(reinterpret_cast<uint8_t*>(xq) + xq_bytes) : nullptr;
    auto stream = static_cast<cudaStream_t>(ctx.native_stream());

    build_routed_tables_kernel<<<1, 256, 0, stream>>>(
        table.device_entries(), int32_t(n_experts), a.expert_ids.data_as<const int32_t>(),
        a.expert_weights.data_as<const float>(), int32_t(n_tokens), int32_t(k), tables);
    TANDEM_CUDA_CHECK_LAUNCH("build_routed_tables_kernel");
    if (q8_x) launch_quantize_q8(a.x.data_as<const float>(), x_blocks, xq, xd, stream);
    const GroupedArgs args{.entries = tables.entries,
                           .token_index = tables.token_index,
                           .x = a.x.data_as<const float>(),
                           .hidden = hidden,
                           .ffn = ffn,
                           .gate_row_bytes = row_bytes(table.gate_type(), hidden),
                           .down_row_bytes = row_bytes(table.down_type(), ffn),
                           .hidden_rows = hidden_rows,
                           .down_rows = down_rows,
                           .xq = xq,
                           .xd = xd};
    const dim3 gate_grid(blocks_for(ffn, kWarpsPerBlock), unsigned(n_experts));
    const dim3 down_grid(blocks_for(hidden, kWarpsPerBlock * kRowsPerWarp), unsigned(n_experts));
    launch_grouped(table.gate_type(), table.down_type(), int(n_tokens), gate_grid, down_grid, args,
                   stream);
    constexpr int kThreads = 256;
    combine_kernel<<<stride_blocks(ctx, n_tokens * hidden, kThreads), kThreads, 0, stream>>>(
        down_rows, tables.token_slot_offsets, tables.token_slots, tables.slot_weight, n_tokens,
        hidden, a.out.data_as<float>());
    TANDEM_CUDA_CHECK_LAUNCH("combine_kernel (routed)");
}

}  // namespace tandem::cuda

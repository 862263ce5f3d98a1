#include "kernels/cpu/expert_ffn.h"

#include <algorithm>
#include <map>
#include <vector>

#include "kernels/cpu/activation.h"
#include "kernels/cpu/linear.h"
#include "kernels/cpu/quant.h"
#include "kernels/cpu/tile_gemm.h"
#include "kernels/cpu/vec_dot.h"
#include "kernels/error.h"

namespace tandem::cpu {

namespace {

// Up to this many intermediate elements are quantized on the calling thread (a decode step of a
// top-8 model with ffn 2048 has 16K); beyond, in a pool job.
constexpr int64_t kInlineQuantizeElements = int64_t(1) << 15;

// The intermediate element of one row: bias added to gate and up (where the expert has them),
// then the activation of GluOptions.
struct Glu {
    const float* gate_bias;  // [ffn] or null
    const float* up_bias;
    GluOptions options;

    Glu(const ExpertWeights& w, const GluOptions& o)
        : gate_bias(w.gate_bias.empty() ? nullptr : w.gate_bias.data_as<const float>()),
          up_bias(w.up_bias.empty() ? nullptr : w.up_bias.data_as<const float>()),
          options(o) {}

    float operator()(float gate, float up, int64_t row) const {
        if (gate_bias != nullptr) gate += gate_bias[row];
        if (up_bias != nullptr) up += up_bias[row];
        if (options.limit <= 0.0f) return silu(gate) * up;
        gate = std::min(gate, options.limit);
        up = std::clamp(up, -options.limit, options.limit);
        return (up + 1.0f) * gate * sigmoid(options.alpha * gate);
    }
};

// A block of output rows of one expert's matrix: the unit of work of both jobs.
struct RowBlock {
    int64_t expert, begin, end;
};

// Rows per task: at least 4 tasks per thread so uneven experts balance, at least 8 rows so a
// task amortises its setup, at most 128.
int64_t rows_per_task(int64_t total_rows, int n_threads) {
    return std::clamp<int64_t>(total_rows / (int64_t(n_threads) * 4), 8, 128);
}

void add_row_blocks(std::vector<RowBlock>& blocks, std::span<const int64_t> experts, int64_t rows,
                    int64_t step) {
    for (int64_t e : experts)
        for (int64_t r = 0; r < rows; r += step)
            blocks.push_back({e, r, std::min(rows, r + step)});
}

// The tasks of a job: tile-path experts (tiled) in tiles of their input dimension k, first since
// they are the longest; then the dot-product experts (dotted) in blocks sized for balance.
// matrix: the job's weight matrix of an expert (gate for job 1, down for job 2).
std::vector<RowBlock> row_blocks(std::span<const int64_t> tiled, std::span<const int64_t> dotted,
                                 std::span<const ExpertWeights> experts,
                                 Tensor ExpertWeights::*matrix, int64_t rows, int64_t k,
                                 int n_threads) {
    std::vector<RowBlock> blocks;
    for (int64_t e : tiled)
        add_row_blocks(blocks, std::span(&e, 1), rows,
                       tile_gemm_rows((experts[size_t(e)].*matrix).dtype(), k));
    add_row_blocks(blocks, dotted, rows, rows_per_task(rows * int64_t(dotted.size()), n_threads));
    return blocks;
}

// The tiled experts' activations (x or the intermediate) in one buffer of 4 bytes per element
// and slot: expert e's rows, in its tile type (f32 or bf16), are dense from slot first(e).
struct TileRows {
    std::vector<std::byte> bytes;
    int64_t width = 0;

    TileRows(int64_t n_slots, int64_t width_)
        : bytes(size_t(n_slots * width_ * 4)), width(width_) {}
    std::byte* row(int64_t first, int64_t slot, DType type) {
        return bytes.data() + first * width * 4 + (slot - first) * row_bytes(type, width);
    }
};

// Job 1 of a tiled expert: gate and up rows [block.begin, block.end) for all of its slots,
// silu(gate) * up into act [n_slots, ffn].
void gate_up_tile(const ExpertWeights& w, const Glu& glu, const RowBlock& block,
                  std::span<const int32_t> offsets, TileRows& x_slots, int64_t hidden, int64_t ffn,
                  float* act) {
    const int64_t first = offsets[size_t(block.expert)];
    const int64_t m = offsets[size_t(block.expert + 1)] - first, n = block.end - block.begin;
    thread_local std::vector<float> gate, up;
    gate.resize(size_t(m * n));
    up.resize(size_t(m * n));
    const int64_t w_row_bytes = row_bytes(w.gate.dtype(), hidden);
    const void* x = x_slots.row(first, first, tile_gemm_activation_type(w.gate.dtype()));
    tile_gemm(x, m, static_cast<const std::byte*>(w.gate.data()) + block.begin * w_row_bytes,
              w.gate.dtype(), n, hidden, gate.data());
    tile_gemm(x, m, static_cast<const std::byte*>(w.up.data()) + block.begin * w_row_bytes,
              w.up.dtype(), n, hidden, up.data());
    for (int64_t i = 0; i < m; ++i) {
        float* row = act + (first + i) * ffn + block.begin;
        for (int64_t j = 0; j < n; ++j)
            row[j] = glu(gate[size_t(i * n + j)], up[size_t(i * n + j)], block.begin + j);
    }
}

// Job 2 of a tiled expert: down rows [block.begin, block.end) for all of its slots, into
// partial [n_slots, hidden].
void down_tile(const Tensor& down, const RowBlock& block, std::span<const int32_t> offsets,
               TileRows& act_slots, int64_t hidden, int64_t ffn, float* partial) {
    const int64_t first = offsets[size_t(block.expert)];
    const int64_t m = offsets[size_t(block.expert + 1)] - first, n = block.end - block.begin;
    thread_local std::vector<float> out;
    out.resize(size_t(m * n));
    tile_gemm(
        act_slots.row(first, first, tile_gemm_activation_type(down.dtype())), m,
        static_cast<const std::byte*>(down.data()) + block.begin * row_bytes(down.dtype(), ffn),
        down.dtype(), n, ffn, out.data());
    for (int64_t i = 0; i < m; ++i)
        std::copy_n(out.data() + i * n, n, partial + (first + i) * hidden + block.begin);
}

}  // namespace

void check_swiglu_expert(const ExpertWeights& w, int64_t e, int64_t hidden, int64_t ffn) {
    const auto ok = [](const Tensor& t, int64_t rows, int64_t cols) {
        return t.rank() == 2 && t.dim(0) == rows && t.dim(1) == cols && is_weight_type(t.dtype()) &&
               t.is_contiguous() && cols % dtype_block_size(t.dtype()) == 0;
    };
    if (!ok(w.gate, ffn, hidden) || !ok(w.up, ffn, hidden) || !ok(w.down, hidden, ffn) ||
        w.gate.dtype() != w.up.dtype())
        fail("expert ", e, ": gate ", w.gate.describe(), ", up ", w.up.describe(), ", down ",
             w.down.describe(), " do not form a SwiGLU expert of hidden ", hidden);
    const auto bias_ok = [](const Tensor& t, int64_t n) {
        return t.empty() ||
               (t.rank() == 1 && t.dim(0) == n && t.dtype() == DType::F32 && t.is_contiguous());
    };
    if (!bias_ok(w.gate_bias, ffn) || !bias_ok(w.up_bias, ffn) || !bias_ok(w.down_bias, hidden))
        fail("expert ", e, ": biases gate ", w.gate_bias.describe(), ", up ", w.up_bias.describe(),
             ", down ", w.down_bias.describe(), " are not f32 of [", ffn, "], [", ffn, "], [",
             hidden, "]");
}

void swiglu_ffn(const Tensor& x, const ExpertWeights& w, const Tensor& out, ThreadPool& pool) {
    const int64_t n = x.dim(0), ffn_dim = w.gate.dim(0);
    OwnedTensor gate = make_tensor(DType::F32, {n, ffn_dim});
    OwnedTensor up = make_tensor(DType::F32, {n, ffn_dim});
    linear(x, w.gate, Tensor(), gate.view, pool);
    linear(x, w.up, Tensor(), up.view, pool);
    silu_mul(gate.view, up.view, gate.view);
    linear(gate.view, w.down, Tensor(), out, pool);
}

void moe_experts(const MoeExpertsArgs& a, ThreadPool& pool) {
    const int64_t n_experts = int64_t(a.experts.size());
    if (int64_t(a.offsets.size()) != n_experts + 1)
        fail("moe_experts: ", a.offsets.size(), " offsets for ", n_experts, " experts");
    if (!a.skip.empty() && int64_t(a.skip.size()) != n_experts)
        fail("moe_experts: skip mask of ", a.skip.size(), " for ", n_experts, " experts");
    if (a.token_index.size() != a.token_weight.size() ||
        int64_t(a.token_index.size()) != a.offsets.back())
        fail("moe_experts: routing slots disagree with offsets");
    if (a.x.rank() != 2 || !(a.x.shape() == a.out.shape()) || a.x.dtype() != DType::F32 ||
        a.out.dtype() != DType::F32)
        fail("moe_experts: x ", a.x.describe(), " and out ", a.out.describe(), " must match, f32");
    const int64_t n_tokens = a.x.dim(0), hidden = a.x.dim(1);
    for (int32_t token : a.token_index)
        if (token < 0 || token >= n_tokens)
            fail("moe_experts: token index ", token, " out of range");

    std::vector<int64_t> active;
    for (int64_t e = 0; e < n_experts; ++e)
        if (a.offsets[size_t(e + 1)] > a.offsets[size_t(e)] &&
            (a.skip.empty() || !a.skip[size_t(e)]))
            active.push_back(e);
    if (active.empty()) return;
    const int64_t ffn = a.experts[size_t(active[0])].gate.dim(0);
    for (int64_t e : active)
        with_context("moe_experts",
                     [&] { check_swiglu_expert(a.experts[size_t(e)], e, hidden, ffn); });

    const VecDotKernels& kernels = vec_dot_kernels();
    const int64_t n_slots = a.offsets.back();
    const int64_t per_pass = dot_tokens_per_pass();

    // Experts with enough tokens take the tile path (tile_gemm.h); the rest the dot products.
    // tiled_expert: per slot, its expert if that expert is tiled, else -1.
    std::vector<int64_t> tiled, dotted;
    std::vector<int64_t> tiled_expert(size_t(n_slots), -1);
    for (int64_t e : active) {
        const ExpertWeights& w = a.experts[size_t(e)];
        const int64_t first = a.offsets[size_t(e)], tokens = a.offsets[size_t(e + 1)] - first;
        const bool tile =
            use_tile_gemm(w.gate.dtype(), tokens) && use_tile_gemm(w.down.dtype(), tokens);
        (tile ? tiled : dotted).push_back(e);
        if (tile) std::fill_n(tiled_expert.begin() + first, tokens, e);
    }
    const auto is_tiled = [&](int64_t slot) { return tiled_expert[size_t(slot)] >= 0; };

    // The tiled experts' tokens in their tile types, in slot order.
    TileRows x_slots(tiled.empty() ? 0 : n_slots, hidden);
    if (!tiled.empty())
        pool.parallel_for(n_slots, 1, [&](int64_t begin, int64_t end) {
            for (int64_t s = begin; s < end; ++s)
                if (const int64_t e = tiled_expert[size_t(s)]; e >= 0) {
                    const DType type = tile_gemm_activation_type(a.experts[size_t(e)].gate.dtype());
                    to_tile_activations(
                        a.x.data_as<const float>() + a.token_index[size_t(s)] * hidden, type,
                        x_slots.row(a.offsets[size_t(e)], s, type), hidden);
                }
        });

    // x in the format of each dot-product gate/up weight type (usually one), converted once.
    std::map<DType, std::vector<std::byte>> x_acts;
    for (int64_t e : dotted)
        x_acts.try_emplace(vec_dot_type(a.experts[size_t(e)].gate.dtype()));
    for (auto& [type, buffer] : x_acts) {
        const int64_t bytes = row_bytes(type, hidden);
        buffer.resize(size_t(n_tokens * bytes));
        pool.parallel_for(
            n_tokens, 1, [&, t_type = type, buf = buffer.data()](int64_t begin, int64_t end) {
                for (int64_t t = begin; t < end; ++t)
                    quantize_activation(t_type, a.x.data_as<const float>() + t * hidden,
                                        buf + t * bytes, hidden);
            });
    }

    // Job 1: gate and up rows of every active expert, for all of its tokens.
    std::vector<float> act(size_t(n_slots * ffn));  // [n_slots, ffn]: silu(gate) * up
    const std::vector<RowBlock> gate_blocks =
        row_blocks(tiled, dotted, a.experts, &ExpertWeights::gate, ffn, hidden, pool.size());
    pool.run(int64_t(gate_blocks.size()), [&](int64_t task) {
        const RowBlock& block = gate_blocks[size_t(task)];
        const ExpertWeights& w = a.experts[size_t(block.expert)];
        const Glu glu(w, a.glu);
        if (is_tiled(a.offsets[size_t(block.expert)])) {
            gate_up_tile(w, glu, block, a.offsets, x_slots, hidden, ffn, act.data());
            return;
        }
        const DType act_type = vec_dot_type(w.gate.dtype());
        const int64_t act_bytes = row_bytes(act_type, hidden);
        const std::byte* xs = x_acts.at(act_type).data();
        const RowDotNFn dot = row_dot_n(kernels, w.gate.dtype());
        const int64_t w_row_bytes = row_bytes(w.gate.dtype(), hidden);
        const auto* gate = static_cast<const std::byte*>(w.gate.data());
        const auto* up = static_cast<const std::byte*>(w.up.data());
        const int64_t first = a.offsets[size_t(block.expert)],
                      last = a.offsets[size_t(block.expert + 1)];
        const RowsDotFn dot_rows = one_token_row_dots(kernels, w.gate.dtype());
        if (last - first == 1 && dot_rows) {  // one token (decode): rows share its activation
            const void* x_row = xs + a.token_index[size_t(first)] * act_bytes;
            // A tile: gate and up of kMaxDotRows / 2 rows.
            for_each_row_tile(
                block.begin, block.end, kMaxDotRows / 2, [&](const int64_t* row, int n) {
                    const void* w_rows[kMaxDotRows];
                    for (int j = 0; j < n; ++j) {
                        w_rows[j] = gate + row[j] * w_row_bytes;
                        w_rows[n + j] = up + row[j] * w_row_bytes;
                    }
                    float gu[kMaxDotRows];
                    dot_rows(w_rows, 2 * n, x_row, hidden, gu);
                    for (int j = 0; j < n; ++j)
                        act[size_t(first * ffn + row[j])] = glu(gu[j], gu[n + j], row[j]);
                });
            return;
        }
        for (int64_t row = block.begin; row < block.end; ++row) {
            for (int64_t s0 = first; s0 < last; s0 += per_pass) {
                const int n = int(std::min<int64_t>(per_pass, last - s0));
                const void* rows[kMaxDotTokens];
                float g[kMaxDotTokens], u[kMaxDotTokens];
                for (int j = 0; j < n; ++j)
                    rows[j] = xs + a.token_index[size_t(s0 + j)] * act_bytes;
                dot(gate + row * w_row_bytes, rows, n, hidden, g);
                dot(up + row * w_row_bytes, rows, n, hidden, u);
                for (int j = 0; j < n; ++j)
                    act[size_t((s0 + j) * ffn + row)] = glu(g[j], u[j], row);
            }
        }
    });

    // Each slot's intermediate in its down weights' format.
    // (The tiled experts' in bf16.)
    const int64_t first_dotted = dotted.empty() ? active[0] : dotted[0];
    DType down_type = vec_dot_type(a.experts[size_t(first_dotted)].down.dtype());
    for (int64_t e : dotted)
        if (vec_dot_type(a.experts[size_t(e)].down.dtype()) != down_type) down_type = DType::F32;
    const bool mixed_down =
        down_type == DType::F32 &&
        vec_dot_type(a.experts[size_t(first_dotted)].down.dtype()) != DType::F32;
    // Mixed down types in one layer are rare (GGUF Q4_K_M mixes types across layers, not
    // experts); they take the f32 path through dequantized rows below.
    const int64_t act_bytes = row_bytes(down_type, ffn);
    std::vector<std::byte> act_q;
    const std::byte* acts = reinterpret_cast<const std::byte*>(act.data());
    TileRows act_slots(tiled.empty() ? 0 : n_slots, ffn);
    if (down_type != DType::F32 || !tiled.empty()) {
        if (down_type != DType::F32) act_q.resize(size_t(n_slots * act_bytes));
        const auto quantize_slots = [&](int64_t begin, int64_t end) {
            for (int64_t s = begin; s < end; ++s)
                if (const int64_t e = tiled_expert[size_t(s)]; e >= 0) {
                    const DType type = tile_gemm_activation_type(a.experts[size_t(e)].down.dtype());
                    to_tile_activations(act.data() + s * ffn, type,
                                        act_slots.row(a.offsets[size_t(e)], s, type), ffn);
                } else if (down_type != DType::F32)
                    quantize_activation(down_type, act.data() + s * ffn,
                                        act_q.data() + s * act_bytes, ffn);
        };
        // A decode step's few slots take microseconds: on the caller, with no job boundary at
        // which a preempted worker would hold up the step.
        if (n_slots * ffn <= kInlineQuantizeElements)
            quantize_slots(0, n_slots);
        else
            pool.parallel_for(n_slots, 1, quantize_slots);
        if (down_type != DType::F32) acts = act_q.data();
    }

    // Job 2: down rows of every active expert, into per-slot partial outputs.
    std::vector<float> partial(size_t(n_slots * hidden));  // [n_slots, hidden]
    const std::vector<RowBlock> down_blocks =
        row_blocks(tiled, dotted, a.experts, &ExpertWeights::down, hidden, ffn, pool.size());
    pool.run(int64_t(down_blocks.size()), [&](int64_t task) {
        const RowBlock& block = down_blocks[size_t(task)];
        const Tensor& down = a.experts[size_t(block.expert)].down;
        if (is_tiled(a.offsets[size_t(block.expert)])) {
            down_tile(down, block, a.offsets, act_slots, hidden, ffn, partial.data());
            return;
        }
        const int64_t w_row_bytes = row_bytes(down.dtype(), ffn);
        const auto* rows = static_cast<const std::byte*>(down.data());
        const RowDotNFn dot = mixed_down ? kernels.dotn_f32 : row_dot_n(kernels, down.dtype());
        thread_local std::vector<float> widened;
        const int64_t first = a.offsets[size_t(block.expert)],
                      last = a.offsets[size_t(block.expert + 1)];
        const RowsDotFn dot_rows = mixed_down ? nullptr : one_token_row_dots(kernels, down.dtype());
        if (last - first == 1 && dot_rows) {  // one token, as in job 1
            const void* slot_row = acts + first * act_bytes;
            for_each_row_tile(block.begin, block.end, kMaxDotRows, [&](const int64_t* row, int n) {
                const void* w_rows[kMaxDotRows];
                for (int j = 0; j < n; ++j)
                    w_rows[j] = rows + row[j] * w_row_bytes;
                float out[kMaxDotRows];
                dot_rows(w_rows, n, slot_row, ffn, out);
                for (int j = 0; j < n; ++j)
                    partial[size_t(first * hidden + row[j])] = out[j];
            });
            return;
        }
        for (int64_t row = block.begin; row < block.end; ++row) {
            const void* w_row = rows + row * w_row_bytes;
            if (mixed_down) {
                widened.resize(size_t(ffn));
                row_to_f32(w_row, down.dtype(), ffn, widened.data());
                w_row = widened.data();
            }
            for (int64_t s0 = first; s0 < last; s0 += per_pass) {
                const int n = int(std::min<int64_t>(per_pass, last - s0));
                const void* slot_rows[kMaxDotTokens];
                float out[kMaxDotTokens];
                for (int j = 0; j < n; ++j)
                    slot_rows[j] = acts + (s0 + j) * act_bytes;
                dot(w_row, slot_rows, n, ffn, out);
                for (int j = 0; j < n; ++j)
                    partial[size_t((s0 + j) * hidden + row)] = out[j];
            }
        }
    });

    // Weighted sum into each token's row, in slot order (deterministic for any thread count).
    float* out = a.out.data_as<float>();
    for (int64_t e : active) {
        const Tensor& bias = a.experts[size_t(e)].down_bias;
        const float* b = bias.empty() ? nullptr : bias.data_as<const float>();
        for (int64_t s = a.offsets[size_t(e)]; s < a.offsets[size_t(e + 1)]; ++s) {
            float* o = out + a.token_index[size_t(s)] * hidden;
            const float weight = a.token_weight[size_t(s)];
            const float* p = partial.data() + s * hidden;
            if (b != nullptr) {
                for (int64_t i = 0; i < hidden; ++i)
                    o[i] += weight * (p[i] + b[i]);
            } else {
                for (int64_t i = 0; i < hidden; ++i)
                    o[i] += weight * p[i];
            }
        }
    }
}

}  // namespace tandem::cpu

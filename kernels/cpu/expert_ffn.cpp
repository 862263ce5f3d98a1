#include "kernels/cpu/expert_ffn.h"

#include <algorithm>
#include <array>
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

// Appends rows [0, rows) of each of `experts` in blocks of `step` to blocks[n..]; returns the new
// n.
int64_t add_row_blocks(RowBlock* blocks, int64_t n, std::span<const int64_t> experts, int64_t rows,
                       int64_t step) {
    for (int64_t e : experts)
        for (int64_t r = 0; r < rows; r += step)
            blocks[n++] = {e, r, std::min(rows, r + step)};
    return n;
}

// The most blocks row_blocks makes for n_experts experts of `rows` rows: every block has at
// least min(8, 16) rows (rows_per_task, tile_gemm_rows).
int64_t max_row_blocks(int64_t n_experts, int64_t rows) {
    return n_experts * ((rows + 7) / 8);
}

// The tasks of a job: tile-path experts (tiled) in tiles of their input dimension k, first since
// they are the longest; then the dot-product experts (dotted) in blocks sized for balance.
// matrix: the job's weight matrix of an expert (gate for job 1, down for job 2).
std::span<const RowBlock> row_blocks(std::span<const int64_t> tiled,
                                     std::span<const int64_t> dotted,
                                     std::span<const ExpertWeights> experts,
                                     Tensor ExpertWeights::*matrix, int64_t rows, int64_t k,
                                     int n_threads, ScratchArena& scratch) {
    auto* blocks = scratch.take<RowBlock>(
        max_row_blocks(int64_t(tiled.size() + dotted.size()), rows), "moe_experts row blocks");
    int64_t n = 0;
    for (int64_t e : tiled)
        n = add_row_blocks(blocks, n, std::span(&e, 1), rows,
                           tile_gemm_rows((experts[size_t(e)].*matrix).dtype(), k));
    n = add_row_blocks(blocks, n, dotted, rows,
                       rows_per_task(rows * int64_t(dotted.size()), n_threads));
    return {blocks, size_t(n)};
}

// The tiled experts' activations (x or the intermediate) in one buffer of 4 bytes per element
// and slot: expert e's rows, in its tile type (f32 or bf16), are dense from slot first(e).
struct TileRows {
    std::byte* bytes = nullptr;
    int64_t width = 0;

    std::byte* row(int64_t first, int64_t slot, DType type) const {
        return bytes + first * width * 4 + (slot - first) * row_bytes(type, width);
    }
};

// Job 1 of a tiled expert: gate and up rows [block.begin, block.end) for all of its slots,
// silu(gate) * up into act [n_slots, ffn].
void gate_up_tile(const ExpertWeights& w, const Glu& glu, const RowBlock& block,
                  std::span<const int32_t> offsets, const TileRows& x_slots, int64_t hidden,
                  int64_t ffn, float* act) {
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
               const TileRows& act_slots, int64_t hidden, int64_t ffn, float* partial) {
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

void swiglu_ffn(const Tensor& x, const ExpertWeights& w, const Tensor& out, ThreadPool& pool,
                ScratchArena& scratch) {
    const int64_t n = x.dim(0), ffn_dim = w.gate.dim(0);
    const ScratchArena::Frame frame(scratch);
    const Tensor gate = scratch.take_tensor(DType::F32, {n, ffn_dim}, "ffn gate");
    const Tensor up = scratch.take_tensor(DType::F32, {n, ffn_dim}, "ffn up");
    linear(x, w.gate, Tensor(), gate, pool);
    linear(x, w.up, Tensor(), up, pool);
    silu_mul(gate, up, gate);
    linear(gate, w.down, Tensor(), out, pool);
}

size_t swiglu_ffn_scratch_bytes(int64_t n_tokens, int64_t ffn) {
    return 2 * ScratchArena::rounded(size_t(n_tokens * ffn) * 4);
}

namespace {

// A byte buffer per activation format (DType), the formats the dot-product experts' gate/up
// weights read x in (usually one).
using ActivationRows = std::array<std::byte*, 256>;

// The activation format of `matrix` of every expert in `experts` whose weights are dotted, as a
// set (indexed by DType).
std::array<bool, 256> dot_formats(std::span<const ExpertWeights> experts,
                                  std::span<const int64_t> dotted, Tensor ExpertWeights::*matrix) {
    std::array<bool, 256> used{};
    for (int64_t e : dotted)
        used[size_t(vec_dot_type((experts[size_t(e)].*matrix).dtype()))] = true;
    return used;
}

// One call's plan and the scratch it works in: which experts run on which path, and the
// activations of each step. Every pointer is into the ScratchArena.
struct MoePlan {
    int64_t n_tokens = 0, hidden = 0, ffn = 0, n_slots = 0;
    std::span<const int64_t> active, tiled, dotted;
    const int64_t* tiled_expert = nullptr;  // [n_slots]: the slot's expert if tiled, else -1
    TileRows x_slots;                       // the tiled experts' tokens in their tile types
    ActivationRows x_rows{};                // x in each dotted gate/up format: [n_tokens, *]
    float* act = nullptr;                   // [n_slots, ffn]: the gated intermediate
    // The intermediate in the down weights' dot format (acts, act_bytes per slot); the f32 path
    // through dequantized rows when the dotted experts' down types differ (mixed_down).
    DType down_type = DType::F32;
    bool mixed_down = false;
    const std::byte* acts = nullptr;
    int64_t act_bytes = 0;
    TileRows act_slots;        // the tiled experts' intermediate in their tile types
    float* partial = nullptr;  // [n_slots, hidden]: each slot's down output

    bool is_tiled(int64_t slot) const { return tiled_expert[slot] >= 0; }
};

void check_args(const MoeExpertsArgs& a) {
    const size_t n_experts = a.experts.size();
    if (a.offsets.size() != n_experts + 1)
        fail("moe_experts: ", a.offsets.size(), " offsets for ", n_experts, " experts");
    if (!a.skip.empty() && a.skip.size() != n_experts)
        fail("moe_experts: skip mask of ", a.skip.size(), " for ", n_experts, " experts");
    if (a.token_index.size() != a.token_weight.size() ||
        int64_t(a.token_index.size()) != a.offsets.back())
        fail("moe_experts: routing slots disagree with offsets");
    if (a.x.rank() != 2 || !(a.x.shape() == a.out.shape()) || a.x.dtype() != DType::F32 ||
        a.out.dtype() != DType::F32)
        fail("moe_experts: x ", a.x.describe(), " and out ", a.out.describe(), " must match, f32");
    for (int32_t token : a.token_index)
        if (token < 0 || token >= a.x.dim(0))
            fail("moe_experts: token index ", token, " out of range");
}

// Step 1: validates the call, splits the active experts between the tile path and the dot
// products, and converts x to what each path reads. Empty `active`: nothing to compute.
MoePlan prepare(const MoeExpertsArgs& a, ThreadPool& pool, ScratchArena& scratch) {
    MoePlan p;
    const int64_t n_experts = int64_t(a.experts.size());
    p.n_tokens = a.x.dim(0);
    p.hidden = a.x.dim(1);
    p.n_slots = a.offsets.back();

    auto* lists = scratch.take<int64_t>(3 * n_experts, "moe_experts expert lists");
    int64_t n_active = 0;
    for (int64_t e = 0; e < n_experts; ++e)
        if (a.offsets[size_t(e + 1)] > a.offsets[size_t(e)] &&
            (a.skip.empty() || !a.skip[size_t(e)]))
            lists[n_active++] = e;
    p.active = {lists, size_t(n_active)};
    if (n_active == 0) return p;
    p.ffn = a.experts[size_t(p.active[0])].gate.dim(0);
    for (int64_t e : p.active)
        with_context("moe_experts",
                     [&] { check_swiglu_expert(a.experts[size_t(e)], e, p.hidden, p.ffn); });

    // Experts with enough tokens take the tile path (tile_gemm.h); the rest the dot products.
    int64_t* tiled = lists + n_experts;
    int64_t* dotted = lists + 2 * n_experts;
    int64_t n_tiled = 0, n_dotted = 0;
    auto* tiled_expert = scratch.take<int64_t>(p.n_slots, "moe_experts slot paths");
    std::fill_n(tiled_expert, p.n_slots, -1);
    for (int64_t e : p.active) {
        const ExpertWeights& w = a.experts[size_t(e)];
        const int64_t first = a.offsets[size_t(e)], tokens = a.offsets[size_t(e + 1)] - first;
        if (use_tile_gemm(w.gate.dtype(), tokens) && use_tile_gemm(w.down.dtype(), tokens)) {
            tiled[n_tiled++] = e;
            std::fill_n(tiled_expert + first, tokens, e);
        } else {
            dotted[n_dotted++] = e;
        }
    }
    p.tiled = {tiled, size_t(n_tiled)};
    p.dotted = {dotted, size_t(n_dotted)};
    p.tiled_expert = tiled_expert;

    const float* x = a.x.data_as<const float>();
    if (n_tiled > 0) {
        p.x_slots = {scratch.take<std::byte>(p.n_slots * p.hidden * 4, "moe_experts tiled x"),
                     p.hidden};
        pool.parallel_for(p.n_slots, 1, [&](int64_t begin, int64_t end) {
            for (int64_t s = begin; s < end; ++s)
                if (const int64_t e = tiled_expert[s]; e >= 0) {
                    const DType type = tile_gemm_activation_type(a.experts[size_t(e)].gate.dtype());
                    to_tile_activations(x + a.token_index[size_t(s)] * p.hidden, type,
                                        p.x_slots.row(a.offsets[size_t(e)], s, type), p.hidden);
                }
        });
    }
    const std::array<bool, 256> formats = dot_formats(a.experts, p.dotted, &ExpertWeights::gate);
    for (size_t f = 0; f < formats.size(); ++f) {
        if (!formats[f]) continue;
        const DType type = DType(f);
        const int64_t bytes = row_bytes(type, p.hidden);
        std::byte* rows = scratch.take<std::byte>(p.n_tokens * bytes, "moe_experts dotted x");
        p.x_rows[f] = rows;
        pool.parallel_for(p.n_tokens, 1, [&](int64_t begin, int64_t end) {
            for (int64_t t = begin; t < end; ++t)
                quantize_activation(type, x + t * p.hidden, rows + t * bytes, p.hidden);
        });
    }
    p.act = scratch.take<float>(p.n_slots * p.ffn, "moe_experts intermediate");
    return p;
}

// Job 1 for a dotted expert: gate and up rows [block.begin, block.end) for all of its tokens.
void gate_up_dots(const MoeExpertsArgs& a, const MoePlan& p, const RowBlock& block,
                  const Glu& glu) {
    const ExpertWeights& w = a.experts[size_t(block.expert)];
    const VecDotKernels& kernels = vec_dot_kernels();
    const DType act_type = vec_dot_type(w.gate.dtype());
    const int64_t act_bytes = row_bytes(act_type, p.hidden), hidden = p.hidden, ffn = p.ffn;
    const std::byte* xs = p.x_rows[size_t(act_type)];
    const int64_t w_row_bytes = row_bytes(w.gate.dtype(), hidden);
    const auto* gate = static_cast<const std::byte*>(w.gate.data());
    const auto* up = static_cast<const std::byte*>(w.up.data());
    const int64_t first = a.offsets[size_t(block.expert)],
                  last = a.offsets[size_t(block.expert + 1)];
    const RowsDotFn dot_rows = one_token_row_dots(kernels, w.gate.dtype());
    if (last - first == 1 && dot_rows) {  // one token (decode): rows share its activation
        const void* x_row = xs + a.token_index[size_t(first)] * act_bytes;
        // A tile: gate and up of kMaxDotRows / 2 rows.
        for_each_row_tile(block.begin, block.end, kMaxDotRows / 2, [&](const int64_t* row, int n) {
            const void* w_rows[kMaxDotRows];
            for (int j = 0; j < n; ++j) {
                w_rows[j] = gate + row[j] * w_row_bytes;
                w_rows[n + j] = up + row[j] * w_row_bytes;
            }
            float gu[kMaxDotRows];
            dot_rows(w_rows, 2 * n, x_row, hidden, gu);
            for (int j = 0; j < n; ++j)
                p.act[first * ffn + row[j]] = glu(gu[j], gu[n + j], row[j]);
        });
        return;
    }
    const RowDotNFn dot = row_dot_n(kernels, w.gate.dtype());
    const int64_t per_pass = dot_tokens_per_pass();
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
                p.act[(s0 + j) * ffn + row] = glu(g[j], u[j], row);
        }
    }
}

// Step 2 (job 1): gate and up rows of every active expert, for all of its tokens, into p.act.
void gate_up(const MoeExpertsArgs& a, const MoePlan& p, ThreadPool& pool, ScratchArena& scratch) {
    const std::span<const RowBlock> blocks = row_blocks(
        p.tiled, p.dotted, a.experts, &ExpertWeights::gate, p.ffn, p.hidden, pool.size(), scratch);
    pool.run(int64_t(blocks.size()), [&](int64_t task) {
        const RowBlock& block = blocks[size_t(task)];
        const ExpertWeights& w = a.experts[size_t(block.expert)];
        const Glu glu(w, a.glu);
        if (p.is_tiled(a.offsets[size_t(block.expert)]))
            gate_up_tile(w, glu, block, a.offsets, p.x_slots, p.hidden, p.ffn, p.act);
        else
            gate_up_dots(a, p, block, glu);
    });
}

// Step 3a: each slot's intermediate in what its down weights read: the tile type of a tiled
// expert's, the dot format of the others' (one for all of them, f32 when their types differ).
void convert_intermediate(const MoeExpertsArgs& a, MoePlan& p, ThreadPool& pool,
                          ScratchArena& scratch) {
    const int64_t first_dotted = p.dotted.empty() ? p.active[0] : p.dotted[0];
    const DType first_type = vec_dot_type(a.experts[size_t(first_dotted)].down.dtype());
    // Mixed down formats in one layer are rare (GGUF Q4_K_M mixes types across layers, not
    // experts); they take the f32 path through dequantized rows, whichever expert comes first.
    p.mixed_down = std::any_of(p.dotted.begin(), p.dotted.end(), [&](int64_t e) {
        return vec_dot_type(a.experts[size_t(e)].down.dtype()) != first_type;
    });
    p.down_type = p.mixed_down ? DType::F32 : first_type;
    p.act_bytes = row_bytes(p.down_type, p.ffn);
    p.acts = reinterpret_cast<const std::byte*>(p.act);
    if (p.down_type == DType::F32 && p.tiled.empty()) return;

    std::byte* act_q = nullptr;
    if (p.down_type != DType::F32) {
        act_q = scratch.take<std::byte>(p.n_slots * p.act_bytes, "moe_experts dotted intermediate");
        p.acts = act_q;
    }
    if (!p.tiled.empty())
        p.act_slots = {
            scratch.take<std::byte>(p.n_slots * p.ffn * 4, "moe_experts tiled intermediate"),
            p.ffn};
    const auto convert_slots = [&](int64_t begin, int64_t end) {
        for (int64_t s = begin; s < end; ++s)
            if (const int64_t e = p.tiled_expert[s]; e >= 0) {
                const DType type = tile_gemm_activation_type(a.experts[size_t(e)].down.dtype());
                to_tile_activations(p.act + s * p.ffn, type,
                                    p.act_slots.row(a.offsets[size_t(e)], s, type), p.ffn);
            } else if (act_q != nullptr) {
                quantize_activation(p.down_type, p.act + s * p.ffn, act_q + s * p.act_bytes, p.ffn);
            }
    };
    // A decode step's few slots take microseconds: on the caller, with no job boundary at
    // which a preempted worker would hold up the step.
    if (p.n_slots * p.ffn <= kInlineQuantizeElements)
        convert_slots(0, p.n_slots);
    else
        pool.parallel_for(p.n_slots, 1, convert_slots);
}

// Job 2 for a dotted expert: down rows [block.begin, block.end) for all of its tokens.
void down_dots(const MoeExpertsArgs& a, const MoePlan& p, const RowBlock& block) {
    const Tensor& down = a.experts[size_t(block.expert)].down;
    const VecDotKernels& kernels = vec_dot_kernels();
    const int64_t hidden = p.hidden, ffn = p.ffn;
    const int64_t w_row_bytes = row_bytes(down.dtype(), ffn);
    const auto* rows = static_cast<const std::byte*>(down.data());
    const int64_t first = a.offsets[size_t(block.expert)],
                  last = a.offsets[size_t(block.expert + 1)];
    const RowsDotFn dot_rows = p.mixed_down ? nullptr : one_token_row_dots(kernels, down.dtype());
    if (last - first == 1 && dot_rows) {  // one token, as in job 1
        const void* slot_row = p.acts + first * p.act_bytes;
        for_each_row_tile(block.begin, block.end, kMaxDotRows, [&](const int64_t* row, int n) {
            const void* w_rows[kMaxDotRows];
            for (int j = 0; j < n; ++j)
                w_rows[j] = rows + row[j] * w_row_bytes;
            float out[kMaxDotRows];
            dot_rows(w_rows, n, slot_row, ffn, out);
            for (int j = 0; j < n; ++j)
                p.partial[first * hidden + row[j]] = out[j];
        });
        return;
    }
    const RowDotNFn dot = p.mixed_down ? kernels.dotn_f32 : row_dot_n(kernels, down.dtype());
    const int64_t per_pass = dot_tokens_per_pass();
    // Per thread, grown once: the mixed-type path's row in f32.
    thread_local std::vector<float> widened;
    for (int64_t row = block.begin; row < block.end; ++row) {
        const void* w_row = rows + row * w_row_bytes;
        if (p.mixed_down) {
            widened.resize(size_t(ffn));
            row_to_f32(w_row, down.dtype(), ffn, widened.data());
            w_row = widened.data();
        }
        for (int64_t s0 = first; s0 < last; s0 += per_pass) {
            const int n = int(std::min<int64_t>(per_pass, last - s0));
            const void* slot_rows[kMaxDotTokens];
            float out[kMaxDotTokens];
            for (int j = 0; j < n; ++j)
                slot_rows[j] = p.acts + (s0 + j) * p.act_bytes;
            dot(w_row, slot_rows, n, ffn, out);
            for (int j = 0; j < n; ++j)
                p.partial[(s0 + j) * hidden + row] = out[j];
        }
    }
}

// Step 3b (job 2): down rows of every active expert, into per-slot partial outputs.
void down(const MoeExpertsArgs& a, MoePlan& p, ThreadPool& pool, ScratchArena& scratch) {
    p.partial = scratch.take<float>(p.n_slots * p.hidden, "moe_experts partial outputs");
    const std::span<const RowBlock> blocks = row_blocks(
        p.tiled, p.dotted, a.experts, &ExpertWeights::down, p.hidden, p.ffn, pool.size(), scratch);
    pool.run(int64_t(blocks.size()), [&](int64_t task) {
        const RowBlock& block = blocks[size_t(task)];
        if (p.is_tiled(a.offsets[size_t(block.expert)]))
            down_tile(a.experts[size_t(block.expert)].down, block, a.offsets, p.act_slots, p.hidden,
                      p.ffn, p.partial);
        else
            down_dots(a, p, block);
    });
}

// Step 4: the weighted sum into each token's row, in slot order (deterministic for any thread
// count), with the down bias where the experts have one.
void reduce(const MoeExpertsArgs& a, const MoePlan& p) {
    float* out = a.out.data_as<float>();
    const int64_t hidden = p.hidden;
    for (int64_t e : p.active) {
        const Tensor& bias = a.experts[size_t(e)].down_bias;
        const float* b = bias.empty() ? nullptr : bias.data_as<const float>();
        for (int64_t s = a.offsets[size_t(e)]; s < a.offsets[size_t(e + 1)]; ++s) {
            float* o = out + a.token_index[size_t(s)] * hidden;
            const float weight = a.token_weight[size_t(s)];
            const float* partial = p.partial + s * hidden;
            if (b != nullptr) {
                for (int64_t i = 0; i < hidden; ++i)
                    o[i] += weight * (partial[i] + b[i]);
            } else {
                for (int64_t i = 0; i < hidden; ++i)
                    o[i] += weight * partial[i];
            }
        }
    }
}

}  // namespace

size_t moe_experts_scratch_bytes(std::span<const ExpertWeights> experts, int64_t n_tokens,
                                 int64_t n_slots, int64_t hidden) {
    const int64_t n_experts = int64_t(experts.size());
    int64_t ffn = 0;
    bool tiles = false;
    std::array<bool, 256> gate_formats{}, down_formats{};
    for (const ExpertWeights& w : experts) {
        if (w.gate.empty()) continue;  // not bound here (hybrid: on another device)
        ffn = std::max(ffn, w.gate.dim(0));
        tiles =
            tiles || (tile_gemm_available(w.gate.dtype()) && tile_gemm_available(w.down.dtype()));
        gate_formats[size_t(vec_dot_type(w.gate.dtype()))] = true;
        down_formats[size_t(vec_dot_type(w.down.dtype()))] = true;
    }
    const int64_t most_active = std::min(n_experts, n_slots);
    using A = ScratchArena;
    size_t bytes = A::rounded(size_t(3 * n_experts) * 8) + A::rounded(size_t(n_slots) * 8);
    if (tiles) bytes += 2 * A::rounded(size_t(n_slots * std::max(hidden, ffn)) * 4);
    for (size_t f = 0; f < gate_formats.size(); ++f)
        if (gate_formats[f]) bytes += A::rounded(size_t(n_tokens * row_bytes(DType(f), hidden)));
    bytes += A::rounded(size_t(n_slots * ffn) * 4);  // the intermediate
    int64_t down_bytes = 0;                          // its dot format
    for (size_t f = 0; f < down_formats.size(); ++f)
        if (down_formats[f] && DType(f) != DType::F32)
            down_bytes = std::max(down_bytes, row_bytes(DType(f), ffn));
    bytes += A::rounded(size_t(n_slots * down_bytes));
    bytes += A::rounded(size_t(n_slots * hidden) * 4);  // the partial outputs
    bytes += A::rounded(size_t(max_row_blocks(most_active, ffn)) * sizeof(RowBlock)) +
             A::rounded(size_t(max_row_blocks(most_active, hidden)) * sizeof(RowBlock));
    return bytes;
}

void moe_experts(const MoeExpertsArgs& a, ThreadPool& pool, ScratchArena& scratch) {
    check_args(a);
    ScratchArena::Frame frame(scratch);
    const size_t need =
        moe_experts_scratch_bytes(a.experts, a.x.dim(0), a.offsets.back(), a.x.dim(1));
    if (need > scratch.capacity() - scratch.used())
        fail("moe_experts: needs ", need, " bytes of scratch for ", a.x.dim(0), " tokens and ",
             a.offsets.back(), " routed slots, but the arena has ",
             scratch.capacity() - scratch.used(), " of ", scratch.capacity(),
             " free: it was sized for smaller steps");
    MoePlan plan = prepare(a, pool, scratch);
    if (plan.active.empty()) return;
    gate_up(a, plan, pool, scratch);
    convert_intermediate(a, plan, pool, scratch);
    down(a, plan, pool, scratch);
    reduce(a, plan);
}

void moe_experts(const MoeExpertsArgs& a, ThreadPool& pool) {
    check_args(a);
    ScratchArena scratch(
        moe_experts_scratch_bytes(a.experts, a.x.dim(0), a.offsets.back(), a.x.dim(1)));
    moe_experts(a, pool, scratch);
}

}  // namespace tandem::cpu

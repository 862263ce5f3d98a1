#include "models/blocks/attention_block.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/attention.h"
#include "kernels/cpu/linear.h"
#include "kernels/cpu/norm.h"
#include "kernels/cpu/rope.h"
#include "models/rope.h"

namespace tandem {

namespace {

void clamp_in_place(const Tensor& t, float limit) {
    float* data = t.data_as<float>();
    for (int64_t i = 0; i < t.numel(); ++i)
        data[i] = std::clamp(data[i], -limit, limit);
}

void apply_qk_norm(const Tensor& proj, const Tensor& weight, int64_t n_heads, const ModelConfig& c,
                   ThreadPool& pool) {
    const int64_t n_tokens = proj.dim(0);
    const float eps = float(c.rms_norm_eps);
    if (c.qk_norm == QkNorm::Full) {
        cpu::rms_norm(proj, weight, eps, proj, pool);
    } else if (c.qk_norm == QkNorm::PerHead) {
        const Tensor heads = proj.reshape({n_tokens * n_heads, c.head_dim});
        cpu::rms_norm(heads, weight, eps, heads, pool);
    }
}

}  // namespace

void attention_block(const AttentionWeights& w, const ModelConfig& c, int layer,
                     std::span<const double> inv_freq, const StepLayout& step, const Tensor& x,
                     const Tensor& out, ThreadPool& pool, ScratchArena& scratch) {
    const int64_t n_tokens = step.n_tokens;
    const int64_t q_dim = c.n_heads * c.head_dim, kv_dim = c.n_kv_heads * c.head_dim;
    const ScratchArena::Frame frame(scratch);
    const Tensor q = scratch.take_tensor(DType::F32, {n_tokens, q_dim}, "attention q");
    const Tensor k = scratch.take_tensor(DType::F32, {n_tokens, kv_dim}, "attention k");
    const Tensor v = scratch.take_tensor(DType::F32, {n_tokens, kv_dim}, "attention v");
    cpu::linear(x, w.q, w.q_bias, q, pool);
    cpu::linear(x, w.k, w.k_bias, k, pool);
    cpu::linear(x, w.v, w.v_bias, v, pool);
    if (c.qk_norm != QkNorm::None) {
        apply_qk_norm(q, w.q_norm, c.n_heads, c, pool);
        apply_qk_norm(k, w.k_norm, c.n_kv_heads, c, pool);
    }
    if (c.clip_qkv > 0) {
        for (const Tensor* t : {&q, &k, &v})
            clamp_in_place(*t, float(c.clip_qkv));
    }
    const Tensor q_heads = q.reshape({n_tokens, c.n_heads, c.head_dim});
    const Tensor k_heads = k.reshape({n_tokens, c.n_kv_heads, c.head_dim});
    // YaRN's attention factor scales cos and sin (1 for the other rope types).
    const double rope_scale = rope_attention_factor(c.rope);
    cpu::apply_rope(q_heads, step.positions, inv_freq, rope_scale);
    cpu::apply_rope(k_heads, step.positions, inv_freq, rope_scale);

    const Tensor attended =
        scratch.take_tensor(DType::F32, {n_tokens, c.n_heads, c.head_dim}, "attention output");
    const float scale = 1.0f / std::sqrt(float(c.head_dim));
    std::vector<cpu::AttentionArgs> sequences;
    sequences.reserve(step.sequences.size());
    for (const StepSequence& seq : step.sequences) {
        const int64_t start = seq.cache->length();
        const KvRows keys = seq.cache->keys(layer), values = seq.cache->values(layer);
        write_rows(keys, start, k.data_as<const float>() + seq.first_row * kv_dim, seq.n_tokens);
        write_rows(values, start, v.data_as<const float>() + seq.first_row * kv_dim, seq.n_tokens);
        sequences.push_back(
            {.q = q_heads.slice_rows(seq.first_row, seq.first_row + seq.n_tokens),
             .k_cache = keys,
             .v_cache = values,
             .out = attended.slice_rows(seq.first_row, seq.first_row + seq.n_tokens),
             .start_pos = start,
             .scale = scale,
             .sliding_window = c.sliding_window_of(layer),
             .sinks = w.sinks.empty() ? nullptr : w.sinks.data_as<const float>()});
    }
    // One job for the whole step: a step of many single-token decodes still fills the pool.
    cpu::attention(sequences, pool);
    cpu::linear(attended.reshape({n_tokens, q_dim}), w.o, w.o_bias, out, pool);
}

size_t attention_scratch_bytes(const ModelConfig& c, int64_t n_tokens) {
    const size_t q = size_t(n_tokens * c.n_heads * c.head_dim) * 4;
    const size_t kv = size_t(n_tokens * c.n_kv_heads * c.head_dim) * 4;
    return 2 * ScratchArena::rounded(q) + 2 * ScratchArena::rounded(kv);
}

}  // namespace tandem

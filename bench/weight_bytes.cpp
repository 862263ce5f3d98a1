#include "bench/weight_bytes.h"

#include <cmath>

namespace tandem::bench {

namespace {

double bytes_per_weight(DType type) {
    return double(dtype_block_bytes(type)) / double(dtype_block_size(type));
}

// Weights of one layer's attention projections.
double attention_params(const ModelConfig& c) {
    const double h = double(c.hidden_dim);
    if (c.mla) {
        const MlaConfig& m = *c.mla;
        const double heads = double(c.n_heads);
        const double q = m.q_lora_rank > 0 ? h * double(m.q_lora_rank) +
                                                 double(m.q_lora_rank) * heads * m.qk_head_dim()
                                           : h * heads * double(m.qk_head_dim());
        const double kv_a = h * double(m.kv_lora_rank + m.qk_rope_head_dim);
        const double kv_b =
            double(m.kv_lora_rank) * heads * double(m.qk_nope_head_dim + m.v_head_dim);
        return q + kv_a + kv_b + heads * double(m.v_head_dim) * h;
    }
    const double q = double(c.n_heads * c.head_dim), kv = double(c.n_kv_heads * c.head_dim);
    return 2 * h * q + 2 * h * kv;
}

bool layer_is_moe(const ModelConfig& c, int64_t layer) {
    if (!c.is_moe()) return false;
    return c.layer_is_moe.empty() || c.layer_is_moe[size_t(layer)];
}

}  // namespace

StepBytes decode_step_bytes(const ModelConfig& c, DType weight_type, DType router_type, int batch) {
    const double w = bytes_per_weight(weight_type), r = bytes_per_weight(router_type);
    const double h = double(c.hidden_dim);
    StepBytes s;
    for (int64_t l = 0; l < c.n_layers; ++l) {
        s.attention += attention_params(c) * w;
        if (!layer_is_moe(c, l)) {
            s.dense_ffn += 3 * h * double(c.ffn_dim) * w;
            continue;
        }
        const double e = double(c.n_experts), k = double(c.n_experts_active);
        const double touched = e * (1 - std::pow(1 - k / e, double(batch)));
        s.routers += e * h * r;
        s.routed_experts += touched * 3 * h * double(c.expert_ffn_dim) * w;
        if (c.shared_expert_ffn_dim > 0)
            s.shared_experts += 3 * h * double(c.shared_expert_ffn_dim) * w;
    }
    s.lm_head = double(c.vocab_size) * h * w;
    return s;
}

double parameter_count(const ModelConfig& c) {
    const double h = double(c.hidden_dim);
    double n = double(c.vocab_size) * h * (c.tie_word_embeddings ? 1 : 2);
    for (int64_t l = 0; l < c.n_layers; ++l) {
        n += attention_params(c);
        if (!layer_is_moe(c, l)) {
            n += 3 * h * double(c.ffn_dim);
            continue;
        }
        n += double(c.n_experts) * (h + 3 * h * double(c.expert_ffn_dim));
        n += 3 * h * double(c.shared_expert_ffn_dim);
    }
    return n;
}

}  // namespace tandem::bench

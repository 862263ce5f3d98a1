#include "models/decoder.h"

#include <algorithm>
#include <cstring>
#include <set>

#include "kernels/cpu/cpu_isa.h"
#include "kernels/cpu/linear.h"
#include "kernels/cpu/norm.h"
#include "kernels/error.h"
#include "kernels/log.h"
#include "models/blocks/attention_block.h"
#include "models/blocks/mla_attention_block.h"
#include "models/blocks/moe_block.h"
#include "models/expert_runner.h"
#include "models/quantize_weights.h"
#include "models/rope.h"

namespace tandem {

namespace {

std::string expand(std::string name, int64_t layer, int64_t expert = -1) {
    auto replace = [&](const std::string& key, int64_t value) {
        for (size_t at = name.find(key); at != std::string::npos; at = name.find(key))
            name.replace(at, key.size(), std::to_string(value));
    };
    replace("{L}", layer);
    if (expert >= 0) replace("{E}", expert);
    return name;
}

cpu::ExpertWeights bind_swiglu(const Checkpoint& ckpt, const std::string& gate,
                               const std::string& up, const std::string& down, int64_t hidden,
                               int64_t ffn) {
    return {.gate = ckpt.bind(gate, {ffn, hidden}),
            .up = ckpt.bind(up, {ffn, hidden}),
            .down = ckpt.bind(down, {hidden, ffn})};
}

AttentionWeights bind_attention(const ModelConfig& c, const Checkpoint& ckpt, int64_t layer) {
    const std::string p = cat("model.layers.", layer, ".");
    const int64_t q_dim = c.n_heads * c.head_dim, kv_dim = c.n_kv_heads * c.head_dim;
    AttentionWeights w;
    w.norm = ckpt.bind(p + "input_layernorm.weight", {c.hidden_dim});
    w.q = ckpt.bind(p + "self_attn.q_proj.weight", {q_dim, c.hidden_dim});
    w.k = ckpt.bind(p + "self_attn.k_proj.weight", {kv_dim, c.hidden_dim});
    w.v = ckpt.bind(p + "self_attn.v_proj.weight", {kv_dim, c.hidden_dim});
    w.o = ckpt.bind(p + "self_attn.o_proj.weight", {c.hidden_dim, q_dim});
    if (c.qkv_bias) {
        w.q_bias = ckpt.bind(p + "self_attn.q_proj.bias", {q_dim});
        w.k_bias = ckpt.bind(p + "self_attn.k_proj.bias", {kv_dim});
        w.v_bias = ckpt.bind(p + "self_attn.v_proj.bias", {kv_dim});
    }
    if (c.o_bias) w.o_bias = ckpt.bind(p + "self_attn.o_proj.bias", {c.hidden_dim});
    if (c.attention_sinks) {
        w.sinks = ckpt.bind(p + "self_attn.sinks", {c.n_heads});
        if (w.sinks.dtype() != DType::F32)
            fail(ckpt.dir(), ": tensor ", p, "self_attn.sinks: expected f32, found ",
                 dtype_name(w.sinks.dtype()));
    }
    if (c.qk_norm == QkNorm::PerHead) {
        w.q_norm = ckpt.bind(p + "self_attn.q_norm.weight", {c.head_dim});
        w.k_norm = ckpt.bind(p + "self_attn.k_norm.weight", {c.head_dim});
    } else if (c.qk_norm == QkNorm::Full) {
        w.q_norm = ckpt.bind(p + "self_attn.q_norm.weight", {q_dim});
        w.k_norm = ckpt.bind(p + "self_attn.k_norm.weight", {kv_dim});
    }
    return w;
}

MlaWeights bind_mla(const ModelConfig& c, const Checkpoint& ckpt, int64_t layer) {
    const MlaConfig& m = *c.mla;
    const std::string p = cat("model.layers.", layer, ".");
    const std::string a = p + "self_attn.";
    const int64_t h = c.n_heads, r = m.kv_lora_rank;
    MlaWeights w;
    w.norm = ckpt.bind(p + "input_layernorm.weight", {c.hidden_dim});
    if (m.q_lora_rank > 0) {
        w.q_a = ckpt.bind(a + "q_a_proj.weight", {m.q_lora_rank, c.hidden_dim});
        w.q_a_norm = ckpt.bind(a + "q_a_layernorm.weight", {m.q_lora_rank});
        w.q_b = ckpt.bind(a + "q_b_proj.weight", {h * m.qk_head_dim(), m.q_lora_rank});
        if (m.bias) w.q_a_bias = ckpt.bind(a + "q_a_proj.bias", {m.q_lora_rank});
    } else {
        w.q = ckpt.bind(a + "q_proj.weight", {h * m.qk_head_dim(), c.hidden_dim});
    }
    w.kv_a = ckpt.bind(a + "kv_a_proj_with_mqa.weight", {r + m.qk_rope_head_dim, c.hidden_dim});
    w.kv_a_norm = ckpt.bind(a + "kv_a_layernorm.weight", {r});
    // k_b_proj / v_b_proj: not Hugging Face names, but what the GGUF loader calls the split
    // attn_k_b / attn_v_b tensors (the names llama.cpp's converter gives them on the way).
    if (ckpt.contains(a + "k_b_proj.weight")) {
        w.k_b = ckpt.bind(a + "k_b_proj.weight", {h, r, m.qk_nope_head_dim});
        w.v_b = ckpt.bind(a + "v_b_proj.weight", {h, m.v_head_dim, r});
    } else {
        w.kv_b = ckpt.bind(a + "kv_b_proj.weight", {h * (m.qk_nope_head_dim + m.v_head_dim), r});
    }
    w.o = ckpt.bind(a + "o_proj.weight", {c.hidden_dim, h * m.v_head_dim});
    if (m.bias) {
        w.kv_a_bias = ckpt.bind(a + "kv_a_proj_with_mqa.bias", {r + m.qk_rope_head_dim});
        w.o_bias = ckpt.bind(a + "o_proj.bias", {c.hidden_dim});
    }
    return w;
}

MoeWeights bind_moe(const ModelConfig& c, const Checkpoint& ckpt, const DecoderNames& n,
                    int64_t layer) {
    MoeWeights w;
    w.router = ckpt.bind(expand(n.router, layer), {c.n_experts, c.hidden_dim});
    if (c.router_bias) w.router_bias = ckpt.bind(expand(n.router_bias, layer), {c.n_experts});
    if (c.router_logit_bias)
        w.router_logit_bias = ckpt.bind(expand(n.router_logit_bias, layer), {c.n_experts});
    for (int64_t e = 0; e < c.n_experts; ++e) {
        cpu::ExpertWeights& expert = w.experts.emplace_back(
            bind_swiglu(ckpt, expand(n.expert_gate, layer, e), expand(n.expert_up, layer, e),
                        expand(n.expert_down, layer, e), c.hidden_dim, c.expert_ffn_dim));
        if (c.expert_bias) {
            expert.gate_bias = ckpt.bind(expand(n.expert_gate_bias, layer, e), {c.expert_ffn_dim});
            expert.up_bias = ckpt.bind(expand(n.expert_up_bias, layer, e), {c.expert_ffn_dim});
            expert.down_bias = ckpt.bind(expand(n.expert_down_bias, layer, e), {c.hidden_dim});
            with_context(expand(n.expert_gate_bias, layer, e), [&] {
                cpu::check_swiglu_expert(expert, e, c.hidden_dim, c.expert_ffn_dim);
            });
        }
    }
    if (c.shared_expert_ffn_dim > 0)
        w.shared = bind_swiglu(ckpt, expand(n.shared_gate, layer), expand(n.shared_up, layer),
                               expand(n.shared_down, layer), c.hidden_dim, c.shared_expert_ffn_dim);
    if (c.shared_expert_gated)
        w.shared_expert_gate = ckpt.bind(expand(n.shared_expert_gate, layer), {1, c.hidden_dim});
    return w;
}

}  // namespace

StepLayout layout_step(std::span<const SequenceStep> steps, const ModelConfig& c) {
    StepLayout layout;
    std::set<const KvCache*> seen;
    for (size_t s = 0; s < steps.size(); ++s) {
        const SequenceStep& step = steps[s];
        if (step.cache == nullptr) fail("forward: sequence ", s, " has no KV cache");
        if (!seen.insert(step.cache).second)
            fail("forward: sequence ", s, " repeats another's KV cache");
        if (step.tokens.empty()) fail("forward: sequence ", s, " has no tokens");
        const int64_t n = int64_t(step.tokens.size()), start = step.cache->length();
        if (start + n > step.cache->capacity())
            fail("forward: sequence ", s, ": ", start, " cached + ", n,
                 " new tokens exceed its context length of ", step.cache->capacity());
        for (int32_t token : step.tokens)
            if (token < 0 || token >= c.vocab_size)
                fail("forward: sequence ", s, ": token id ", token, " outside the vocabulary [0, ",
                     c.vocab_size, ")");
        layout.sequences.push_back(
            {.first_row = layout.n_tokens, .n_tokens = n, .cache = step.cache});
        for (int64_t i = 0; i < n; ++i)
            layout.positions.push_back(start + i);
        layout.n_tokens += n;
    }
    return layout;
}

namespace {

void add_in_place(const Tensor& acc, const Tensor& delta) {
    float* a = acc.data_as<float>();
    const float* d = delta.data_as<const float>();
    for (int64_t i = 0; i < acc.numel(); ++i)
        a[i] += d[i];
}

}  // namespace

DecoderWeights bind_decoder_weights(const ModelConfig& c, const Checkpoint& ckpt,
                                    const DecoderNames& n) {
    DecoderWeights w;
    w.embed = ckpt.bind("model.embed_tokens.weight", {c.vocab_size, c.hidden_dim});
    w.final_norm = ckpt.bind("model.norm.weight", {c.hidden_dim});
    w.lm_head =
        c.tie_word_embeddings ? w.embed : ckpt.bind("lm_head.weight", {c.vocab_size, c.hidden_dim});
    for (int64_t layer = 0; layer < c.n_layers; ++layer) {
        LayerWeights lw;
        if (c.mla) {
            lw.mla = bind_mla(c, ckpt, layer);
        } else {
            lw.attention = bind_attention(c, ckpt, layer);
        }
        lw.ffn_norm = ckpt.bind(cat("model.layers.", layer, ".post_attention_layernorm.weight"),
                                {c.hidden_dim});
        lw.is_moe = c.layer_is_moe[size_t(layer)];
        if (lw.is_moe) {
            lw.moe = bind_moe(c, ckpt, n, layer);
        } else {
            lw.dense = bind_swiglu(ckpt, expand(n.dense_gate, layer), expand(n.dense_up, layer),
                                   expand(n.dense_down, layer), c.hidden_dim, c.ffn_dim);
        }
        w.layers.push_back(std::move(lw));
    }
    return w;
}

Decoder::Decoder(ModelConfig config, Checkpoint checkpoint, const DecoderNames& names)
    : config_(std::move(config)), checkpoint_(std::move(checkpoint)) {
    weights_ = bind_decoder_weights(config_, checkpoint_, names);
    inv_freq_ = rope_inv_freq(config_);
    for (int layer = 0; layer < int(config_.n_layers); ++layer)
        if (weights_.layers[size_t(layer)].is_moe) moe_layers_.push_back(layer);
    const auto unbound = checkpoint_.unbound_names();
    if (!unbound.empty())
        log_info(checkpoint_.dir(), ": ", unbound.size(), " tensors not used by ",
                 config_.architecture, ", e.g. ", unbound.front());
}

Decoder::~Decoder() {
    if (runner_ != nullptr) runner_->drain();  // e.g. prefetches still reading our weights
}

size_t Decoder::scratch_bytes(int64_t n_tokens) const {
    const ModelConfig& c = config_;
    const size_t states = ScratchArena::rounded(size_t(n_tokens * c.hidden_dim) * 4);
    size_t layer_bytes = 0;  // the largest layer's; each layer's frames close before the next
    for (const LayerWeights& lw : weights_.layers) {
        const size_t attention =
            c.mla ? mla_attention_scratch_bytes(c, n_tokens) : attention_scratch_bytes(c, n_tokens);
        const size_t ffn = lw.is_moe
                               ? moe_block_scratch_bytes(lw.moe, c, n_tokens, runner_)
                               : cpu::swiglu_ffn_scratch_bytes(n_tokens, lw.dense.gate.dim(0));
        layer_bytes = std::max({layer_bytes, attention, ffn});
    }
    // h, normed and delta for the whole step, then the layers' or the final rows'.
    return 3 * states + std::max(layer_bytes, states);
}

void Decoder::reserve_scratch(int64_t max_tokens) {
    // scratch_bytes walks every expert's type: done again only when the step is larger than any
    // so far, or what it depends on changed (the runner, the ISA, the weights' types).
    const ScratchSizing sizing{.tokens = max_tokens, .runner = runner_, .isa = cpu::active_isa()};
    if (sized_.runner == sizing.runner && sized_.isa == sizing.isa && sized_.tokens >= max_tokens)
        return;
    scratch_.reserve(scratch_bytes(max_tokens));
    sized_ = sizing;
}

KvCacheShape Decoder::kv_cache_shape(int64_t capacity) const {
    if (config_.mla)  // one latent row per position: [k_pe | c], see mla_attention_block.h
        return {.n_layers = int(config_.n_layers),
                .n_kv_heads = 1,
                .head_dim = config_.mla->qk_rope_head_dim + config_.mla->kv_lora_rank,
                .v_head_dim = 0,
                .capacity = capacity};
    return {.n_layers = int(config_.n_layers),
            .n_kv_heads = config_.n_kv_heads,
            .head_dim = config_.head_dim,
            .v_head_dim = config_.head_dim,
            .capacity = capacity};
}

void Model::quantize_weights(DType type, ThreadPool&, const WeightProgress&) {
    fail(config().architecture, ": load-time quantization to ", dtype_name(type),
         " is not supported");
}

void Decoder::quantize_weights(DType type, ThreadPool& pool, const WeightProgress& progress) {
    if (!is_quantized_weight_type(type))
        fail("quantize: ", dtype_name(type), " is not a quantized weight type");
    sized_ = {};  // the scratch depends on the weights' types
    // Two passes over the same matrices: the first only adds up their bytes for `progress`.
    int64_t total = 0, done = 0;
    bool counting = true;
    auto q = [&](Tensor& t) {
        if (t.empty()) return;
        if (counting) {
            total += t.bytes();
            return;
        }
        done += t.bytes();
        t = quantize_weight(t, type, pool, quantized_);
        if (progress) progress(done, total);
    };
    auto q_ffn = [&](cpu::ExpertWeights& w) {
        q(w.gate);
        q(w.up);
        q(w.down);
    };
    for (const bool pass_counts : {true, false}) {
        counting = pass_counts;
        for (LayerWeights& layer : weights_.layers) {
            q(layer.attention.q);
            q(layer.attention.k);
            q(layer.attention.v);
            q(layer.attention.o);
            if (layer.is_moe) {
                for (cpu::ExpertWeights& expert : layer.moe.experts)
                    q_ffn(expert);
                if (config_.shared_expert_ffn_dim > 0) q_ffn(layer.moe.shared);
            } else {
                q_ffn(layer.dense);
            }
        }
        q(weights_.lm_head);  // a tied lm_head gets its own quantized copy; the embedding stays
    }
    if (runner_ != nullptr) set_expert_runner(runner_);  // the experts' weights moved
}

void Model::set_expert_runner(ExpertRunner*) {
    fail(config().architecture, ": routed experts cannot be placed off the CPU for this model");
}

void Decoder::set_expert_runner(ExpertRunner* runner) {
    if (runner != nullptr) {
        std::vector<const MoeWeights*> moe;
        for (int layer : moe_layers_)
            moe.push_back(&weights_.layers[size_t(layer)].moe);
        runner->bind(config_, moe);
    }
    runner_ = runner;
}

std::vector<Routing> Decoder::predict_later_moe_layers(int moe_index, const Tensor& x,
                                                       ThreadPool& pool) const {
    std::vector<Routing> predicted;
    const int n = std::clamp(runner_->lookahead(), 0, 3);
    for (int i = moe_index + 1; i <= moe_index + n && i < int(moe_layers_.size()); ++i)
        predicted.push_back(
            route_with(weights_.layers[size_t(moe_layers_[size_t(i)])].moe, config_, x, pool));
    return predicted;
}

namespace {
// end_step() on every way out of forward().
struct StepScope {
    ExpertRunner* runner;
    StepScope(ExpertRunner* r, int64_t n_tokens) : runner(r) {
        if (runner != nullptr) runner->begin_step(n_tokens);
    }
    ~StepScope() {
        if (runner != nullptr) runner->end_step();
    }
    StepScope(const StepScope&) = delete;
    StepScope& operator=(const StepScope&) = delete;
};
}  // namespace

OwnedTensor Decoder::forward(std::span<const SequenceStep> steps, ThreadPool& pool,
                             StepRouting* routing) {
    const ModelConfig& c = config_;
    const StepLayout layout = layout_step(steps, c);
    const StepScope scope(runner_, layout.n_tokens);
    if (routing != nullptr) {
        const int lookahead = std::clamp(routing->lookahead, 0, 3);
        const bool want_probabilities = routing->want_probabilities;
        *routing = {};
        routing->lookahead = lookahead;
        routing->want_probabilities = want_probabilities;
    }
    const int64_t n_tokens = layout.n_tokens, hidden = c.hidden_dim;

    // Sized at load for the scheduler's largest step (reserve_scratch); a larger one grows it
    // here, before any of it is handed out.
    reserve_scratch(n_tokens);
    const ScratchArena::Frame frame(scratch_);
    const Tensor h = scratch_.take_tensor(DType::F32, {n_tokens, hidden}, "hidden states");
    {
        int64_t row = 0;
        const auto* embed = static_cast<const std::byte*>(weights_.embed.data());
        const int64_t embed_row = row_bytes(weights_.embed.dtype(), hidden);
        for (const SequenceStep& step : steps)
            for (int32_t token : step.tokens)
                cpu::row_to_f32(embed + token * embed_row, weights_.embed.dtype(), hidden,
                                h.data_as<float>() + hidden * row++);
    }
    const Tensor normed = scratch_.take_tensor(DType::F32, {n_tokens, hidden}, "normed states");
    const Tensor delta = scratch_.take_tensor(DType::F32, {n_tokens, hidden}, "layer outputs");
    for (int layer = 0; layer < int(c.n_layers); ++layer) {
        const LayerWeights& lw = weights_.layers[size_t(layer)];
        if (c.mla) {
            cpu::rms_norm(h, lw.mla.norm, float(c.rms_norm_eps), normed, pool);
            mla_attention_block(lw.mla, c, layer, inv_freq_, layout, normed, delta, pool, scratch_);
        } else {
            cpu::rms_norm(h, lw.attention.norm, float(c.rms_norm_eps), normed, pool);
            attention_block(lw.attention, c, layer, inv_freq_, layout, normed, delta, pool,
                            scratch_);
        }
        add_in_place(h, delta);
        cpu::rms_norm(h, lw.ffn_norm, float(c.rms_norm_eps), normed, pool);
        if (lw.is_moe) {
            Routing* layer_routing = nullptr;
            if (routing != nullptr) {
                routing->layers.push_back(layer);
                layer_routing = &routing->routing.emplace_back();
                if (routing->want_probabilities)
                    routing->probabilities.push_back(router_probabilities(lw.moe, c, normed, pool));
                std::vector<Routing>& predicted = routing->predicted.emplace_back();
                for (int j = 1; j <= routing->lookahead; ++j) {
                    const int later = layer + j;
                    const bool moe =
                        later < int(c.n_layers) && weights_.layers[size_t(later)].is_moe;
                    predicted.push_back(
                        moe ? route_with(weights_.layers[size_t(later)].moe, c, normed, pool)
                            : Routing{});
                }
            }
            const int moe_index =
                int(std::find(moe_layers_.begin(), moe_layers_.end(), layer) - moe_layers_.begin());
            const std::vector<Routing> predicted =
                runner_ != nullptr ? predict_later_moe_layers(moe_index, normed, pool)
                                   : std::vector<Routing>{};
            moe_block(lw.moe, c, normed, delta, pool, layer_routing,
                      {.runner = runner_,
                       .layer = layer,
                       .moe_layer = moe_index,
                       .predicted = predicted,
                       .scratch = &scratch_});
        } else {
            cpu::swiglu_ffn(normed, lw.dense, delta, pool, scratch_);
        }
        add_in_place(h, delta);
    }

    // Rows that need logits: every new token, or each sequence's last.
    std::vector<int64_t> rows;
    for (size_t s = 0; s < steps.size(); ++s) {
        const StepSequence& seq = layout.sequences[s];
        const int64_t first =
            steps[s].all_logits ? seq.first_row : seq.first_row + seq.n_tokens - 1;
        for (int64_t r = first; r < seq.first_row + seq.n_tokens; ++r)
            rows.push_back(r);
    }
    const int64_t n_rows = int64_t(rows.size());
    const Tensor selected = scratch_.take_tensor(DType::F32, {n_rows, hidden}, "final states");
    for (int64_t i = 0; i < n_rows; ++i)
        std::memcpy(selected.data_as<float>() + i * hidden,
                    h.data_as<const float>() + rows[size_t(i)] * hidden,
                    size_t(hidden) * sizeof(float));
    cpu::rms_norm(selected, weights_.final_norm, float(c.rms_norm_eps), selected, pool);
    OwnedTensor logits = make_tensor(DType::F32, {n_rows, c.vocab_size});
    cpu::linear(selected, weights_.lm_head, Tensor(), logits.view, pool);

    // Only now, with nothing left to fail, do the caches take the new positions.
    for (const StepSequence& seq : layout.sequences)
        seq.cache->commit(seq.n_tokens);
    return logits;
}

}  // namespace tandem

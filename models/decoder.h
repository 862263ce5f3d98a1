// The Llama-family decoder that every supported architecture is an instance of:
//   h = embed(tokens)
//   for each layer: h += attention(rms_norm(h)); h += ffn_or_moe(rms_norm(h))
//   logits = lm_head(rms_norm(h))
// Architectures differ in config keys, tensor names and a few switches (biases, q/k norm, shared
// experts, DeepSeek's latent attention and grouped routing), which DecoderNames and ModelConfig
// carry. The weights are views into the mapped
// checkpoint; nothing is copied.
#pragma once

#include <string>
#include <vector>

#include "kernels/cpu/cpu_isa.h"
#include "kernels/cpu/expert_ffn.h"
#include "kernels/scratch_arena.h"
#include "models/blocks/step.h"
#include "models/checkpoint.h"
#include "models/model.h"

namespace tandem {

// Checkpoint tensor names; "{L}" stands for the layer index and "{E}" for the expert index.
struct DecoderNames {
    std::string router = "model.layers.{L}.mlp.gate.weight";
    std::string router_bias = "model.layers.{L}.mlp.gate.e_score_correction_bias";
    std::string expert_gate = "model.layers.{L}.mlp.experts.{E}.gate_proj.weight";
    std::string expert_up = "model.layers.{L}.mlp.experts.{E}.up_proj.weight";
    std::string expert_down = "model.layers.{L}.mlp.experts.{E}.down_proj.weight";
    // Bound when the config has expert_bias / router_logit_bias (gpt-oss).
    std::string expert_gate_bias = "model.layers.{L}.mlp.experts.{E}.gate_proj.bias";
    std::string expert_up_bias = "model.layers.{L}.mlp.experts.{E}.up_proj.bias";
    std::string expert_down_bias = "model.layers.{L}.mlp.experts.{E}.down_proj.bias";
    std::string router_logit_bias = "model.layers.{L}.mlp.gate.bias";
    std::string shared_gate = "model.layers.{L}.mlp.shared_expert.gate_proj.weight";
    std::string shared_up = "model.layers.{L}.mlp.shared_expert.up_proj.weight";
    std::string shared_down = "model.layers.{L}.mlp.shared_expert.down_proj.weight";
    std::string shared_expert_gate = "model.layers.{L}.mlp.shared_expert_gate.weight";
    std::string dense_gate = "model.layers.{L}.mlp.gate_proj.weight";
    std::string dense_up = "model.layers.{L}.mlp.up_proj.weight";
    std::string dense_down = "model.layers.{L}.mlp.down_proj.weight";
};

struct AttentionWeights {
    Tensor norm;     // [hidden_dim] input_layernorm
    Tensor sinks;    // [n_heads] f32, when the config has attention_sinks
    Tensor q, k, v;  // [n_heads * head_dim | n_kv_heads * head_dim, hidden_dim]
    Tensor o;        // [hidden_dim, n_heads * head_dim]
    Tensor q_bias, k_bias, v_bias, o_bias;  // empty unless the config has them
    Tensor q_norm, k_norm;  // [head_dim] per head, or [n_(kv_)heads * head_dim] full
};

// Multi-head latent attention (DeepSeek); shapes with R = kv_lora_rank, P = qk_rope_head_dim,
// D = qk_nope_head_dim + P, V = v_head_dim, H = n_heads.
struct MlaWeights {
    Tensor norm;                // [hidden_dim] input_layernorm
    Tensor q;                   // [H * D, hidden_dim], when q_lora_rank is 0
    Tensor q_a, q_a_norm, q_b;  // [q_lora_rank, hidden_dim], [q_lora_rank], [H * D, q_lora_rank]
    Tensor kv_a;                // [R + P, hidden_dim] kv_a_proj_with_mqa
    Tensor kv_a_norm;           // [R]
    // The key/value up-projections, in one of two layouts: Hugging Face's kv_b, or the split
    // that llama.cpp's converter writes to GGUF since its MLA support (k_b per head transposed,
    // which is the layout the absorbed query reads row by row).
    Tensor kv_b;  // [H * (qk_nope_head_dim + V), R]: per head W_UK then W_UV; or empty, and:
    Tensor k_b;   // [H, R, qk_nope_head_dim]: per head W_UKᵀ
    Tensor v_b;   // [H, V, R]: per head W_UV
    Tensor o;     // [hidden_dim, H * V]
    Tensor q_a_bias, kv_a_bias, o_bias;  // empty unless attention_bias
};

struct MoeWeights {
    Tensor router;                            // [n_experts, hidden_dim]
    Tensor router_bias;                       // [n_experts] selection bias, or empty
    Tensor router_logit_bias;                 // [n_experts] added to the logits, or empty
    std::vector<cpu::ExpertWeights> experts;  // [n_experts]
    cpu::ExpertWeights shared;                // empty unless shared_expert_ffn_dim > 0
    Tensor shared_expert_gate;                // [1, hidden_dim], empty unless gated
};

struct LayerWeights {
    AttentionWeights attention;  // unless the config has MLA
    MlaWeights mla;              // when it does
    Tensor ffn_norm;             // [hidden_dim] post_attention_layernorm
    bool is_moe = false;
    cpu::ExpertWeights dense;  // when !is_moe
    MoeWeights moe;            // when is_moe
};

struct DecoderWeights {
    Tensor embed;       // [vocab_size, hidden_dim]
    Tensor final_norm;  // [hidden_dim]
    Tensor lm_head;     // [vocab_size, hidden_dim], the embedding when tied
    std::vector<LayerWeights> layers;
};

class Decoder final : public Model {
  public:
    // Binds every weight of `config` from `checkpoint` (which the decoder keeps mapped).
    Decoder(ModelConfig config, Checkpoint checkpoint, const DecoderNames& names);
    ~Decoder() override;

    const ModelConfig& config() const override { return config_; }
    OwnedTensor forward(std::span<const SequenceStep> steps, ThreadPool& pool,
                        StepRouting* routing = nullptr) override;
    void reserve_scratch(int64_t max_tokens) override;
    KvCacheShape kv_cache_shape(int64_t capacity) const override;
    void quantize_weights(DType type, ThreadPool& pool, const WeightProgress& progress) override;
    void set_expert_runner(ExpertRunner* runner) override;

    // What a device runner of this decoder reads (models/device_decoder.h): the bound weights
    // (views into the checkpoint or the load-time quantized copies) and the rotary frequencies.
    const DecoderWeights& weights() const { return weights_; }
    std::span<const double> inv_freq() const { return inv_freq_; }

    // The scratch bytes a step of n_tokens takes (its temporaries: the hidden states, each
    // layer's attention projections and, without a runner, its routed experts'), and the arena
    // they come from (tests read its high water and how often it grew).
    size_t scratch_bytes(int64_t n_tokens) const;
    const ScratchArena& scratch() const { return scratch_; }

  private:
    // The gate lookahead of the runner: MoE layers moe_index + 1.. routed from x.
    std::vector<Routing> predict_later_moe_layers(int moe_index, const Tensor& x,
                                                  ThreadPool& pool) const;

    ModelConfig config_;
    Checkpoint checkpoint_;
    DecoderWeights weights_;
    std::vector<Buffer> quantized_;  // storage of weights quantized at load time
    std::vector<double> inv_freq_;
    std::vector<int> moe_layers_;  // model layer index of each MoE layer
    ExpertRunner* runner_ = nullptr;
    ScratchArena scratch_;  // one step at a time: forward() is not reentrant
    // What scratch_ was last sized for (reserve_scratch).
    struct ScratchSizing {
        int64_t tokens = 0;
        const ExpertRunner* runner = nullptr;
        cpu::CpuIsa isa = cpu::CpuIsa::Scalar;
    };
    ScratchSizing sized_;
};

// The experts' activation a config asks for (cpu::GluOptions).
inline cpu::GluOptions glu_options(const ModelConfig& c) {
    return {.limit = float(c.swiglu_limit), .alpha = float(c.swiglu_alpha)};
}

// Validates a step (a KV cache per sequence, tokens in the vocabulary, room in the context) and
// lays its sequences out as consecutive rows.
StepLayout layout_step(std::span<const SequenceStep> steps, const ModelConfig& config);

// Binds the decoder weights named by `names` (exposed for tests of weight binding).
DecoderWeights bind_decoder_weights(const ModelConfig& config, const Checkpoint& checkpoint,
                                    const DecoderNames& names);

}  // namespace tandem

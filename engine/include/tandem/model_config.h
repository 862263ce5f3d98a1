// ModelConfig: the hyperparameters of a loaded decoder-only model, as Engine::model_config()
// returns them (read from config.json, or from a GGUF file's metadata).
//
//   const tandem::ModelConfig& c = engine.model_config();
//   std::printf("%s: %lld layers, %lld experts\n", c.architecture.c_str(),
//               (long long)c.n_layers, (long long)c.n_experts);
//
// Dimension names are those of the README's glossary (hidden_dim, n_heads, n_kv_heads, head_dim,
// ffn_dim, n_experts, n_experts_active, expert_ffn_dim); the config.json key each comes from is
// given where the name differs. Plain values: copying one is cheap and safe.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace tandem {

// Normalisation of queries and keys before rotary embedding.
enum class QkNorm : uint8_t {
    None,
    PerHead,  // RMSNorm over each head's head_dim (Qwen3, Qwen3-MoE)
    Full,     // RMSNorm over the whole q / k projection (OLMoE)
};

// Rotary position embedding (rope_theta and rope_scaling / rope_parameters of config.json).
struct RopeConfig {
    double theta = 10000.0;
    std::string type = "default";  // default | linear | llama3 | yarn
    double factor = 1.0;
    double low_freq_factor = 1.0;
    double high_freq_factor = 4.0;
    int64_t original_max_position_embeddings = 0;
    double partial_rotary_factor = 1.0;
    // yarn: the ramp between interpolated and original frequencies, and the attention factor
    // that multiplies cos and sin (explicit, else from mscale / mscale_all_dim / factor).
    double beta_fast = 32.0;
    double beta_slow = 1.0;
    double mscale = 0.0;          // 0: absent
    double mscale_all_dim = 0.0;  // 0: absent; DeepSeek also scales the softmax by its square
    std::optional<double> attention_factor;
    bool truncate = true;
    // Per-frequency divisors applied after everything above: GGUF files store Llama 3's scaling
    // this way (the rope_freqs tensor) instead of its parameters. Empty: none.
    std::vector<double> freq_factors;
};

// Multi-head latent attention (DeepSeek-V2/V3). Keys and values of all heads are up-projected
// from one per-token latent of kv_lora_rank, plus one rotary key of qk_rope_head_dim shared by
// all heads; queries come from hidden (q_lora_rank 0) or from a low-rank latent.
struct MlaConfig {
    int64_t q_lora_rank = 0;  // 0: a full q_proj
    int64_t kv_lora_rank = 0;
    int64_t qk_nope_head_dim = 0;
    int64_t qk_rope_head_dim = 0;
    int64_t v_head_dim = 0;
    bool rope_interleave = true;  // rotary pairs (2i, 2i+1) instead of (i, i + d/2)
    bool bias = false;            // attention_bias: biases on q_a_proj, kv_a_proj_with_mqa, o_proj
    double latent_norm_eps = 1e-6;  // of q_a_layernorm and kv_a_layernorm, not rms_norm_eps
    int64_t qk_head_dim() const { return qk_nope_head_dim + qk_rope_head_dim; }
};

// How a router turns logits into the chosen experts and their weights.
enum class RouterScoring : uint8_t { Softmax, Sigmoid };
enum class RouterTopk : uint8_t {
    Greedy,              // top-k of the scores
    GroupLimitedGreedy,  // top-k within the topk_group groups of highest max score (V2)
    NoauxTc,             // top-k of score + bias within the groups of highest top-2 sum (V3)
};

// Fields of architectures that lack a feature keep the defaults below.
struct ModelConfig {
    std::string architecture;             // the `architectures` entry, e.g. "Qwen3MoeForCausalLM"
    int64_t vocab_size = 0;               // rows of the embedding and the lm_head
    int64_t hidden_dim = 0;               // hidden_size
    int64_t n_layers = 0;                 // num_hidden_layers
    int64_t n_heads = 0;                  // num_attention_heads (query heads)
    int64_t n_kv_heads = 0;               // num_key_value_heads (GQA when < n_heads)
    int64_t head_dim = 0;                 // head_dim, else hidden_size / num_attention_heads
    int64_t ffn_dim = 0;                  // intermediate_size of the dense SwiGLU layers
    int64_t max_position_embeddings = 0;  // the context the model was trained for
    double rms_norm_eps = 1e-6;           // of every RMSNorm but MLA's latent norms
    RopeConfig rope;
    bool tie_word_embeddings = false;
    bool qkv_bias = false;  // biases on q, k, v projections
    bool o_bias = false;    // bias on the output projection
    QkNorm qk_norm = QkNorm::None;
    double clip_qkv = 0.0;       // 0: none; else q, k, v clamped to [-clip, clip] (OLMoE)
    int64_t sliding_window = 0;  // 0: full attention
    // gpt-oss: a learned logit per query head (self_attn.sinks) that joins each softmax's
    // denominator and takes no value: the head may attend to "nothing" in part.
    bool attention_sinks = false;
    // [n_layers]: which layers attend within sliding_window (Qwen2's max_window_layers or
    // layer_types); empty: every layer does.
    std::vector<bool> layer_is_sliding;
    // Set for DeepSeek-V2/V3, which then use MLA instead of q/k/v attention; head_dim is then
    // qk_rope_head_dim (the rotary width, as transformers sets it) and n_kv_heads == n_heads.
    std::optional<MlaConfig> mla;

    // Mixture of experts; n_experts == 0 for dense models.
    int64_t n_experts = 0;              // routed experts per MoE layer
    int64_t n_experts_active = 0;       // experts chosen per token (num_experts_per_tok)
    int64_t expert_ffn_dim = 0;         // moe_intermediate_size (Mixtral, OLMoE: intermediate_size)
    bool norm_topk_prob = false;        // renormalise the top-k router probabilities
    int64_t shared_expert_ffn_dim = 0;  // 0: no shared expert
    bool shared_expert_gated = false;   // sigmoid gate on the shared expert (Qwen2-MoE)
    std::vector<bool> layer_is_moe;     // [n_layers]
    // DeepSeek routing; the defaults are the softmax top-k of the other MoE architectures.
    RouterScoring router_scoring = RouterScoring::Softmax;
    RouterTopk router_topk = RouterTopk::Greedy;
    int64_t n_groups = 1;                // n_group: experts split in equal consecutive groups
    int64_t topk_groups = 1;             // topk_group: groups the top-k may choose from
    double routed_scaling_factor = 1.0;  // multiplies the routed experts' weights
    bool router_bias = false;            // e_score_correction_bias, for the choice only
    bool router_logit_bias = false;      // a bias added to the router logits (gpt-oss)
    // gpt-oss's routed experts: biases on gate, up and down, and its clamped SwiGLU
    // (swiglu_limit > 0): gate clamped to <= limit, up to [-limit, limit], then
    // (up + 1) * gate * sigmoid(swiglu_alpha * gate). swiglu_limit 0: silu(gate) * up.
    bool expert_bias = false;
    double swiglu_limit = 0.0;
    double swiglu_alpha = 1.0;

    // From config.json, then generation_config.json, whose values win (as in transformers).
    std::optional<int32_t> bos_token_id;
    std::vector<int32_t> eos_token_ids;  // generation stops at any of them

    bool is_moe() const { return n_experts > 0; }  // has routed experts
    // The window of `layer`'s attention; 0: full.
    int64_t sliding_window_of(int64_t layer) const {
        if (layer_is_sliding.empty()) return sliding_window;
        return layer_is_sliding[size_t(layer)] ? sliding_window : 0;
    }
};

}  // namespace tandem

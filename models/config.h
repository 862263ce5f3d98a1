// ModelConfig: the hyperparameters of a decoder-only model, read from config.json.
//
// Everything a checkpoint may override is read from its config.json (rope_theta, rope_scaling,
// rms_norm_eps, head_dim, ...); no architecture hard-codes what its file can say. Each
// architecture's reader (models/architectures/) fills this struct with its own key names.
// ConfigReader gives those readers typed access whose errors name the file and the key.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace tandem {

enum class QkNorm : uint8_t {
    None,
    PerHead,  // RMSNorm over each head's head_dim (Qwen3, Qwen3-MoE)
    Full,     // RMSNorm over the whole q / k projection (OLMoE)
};

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

struct ModelConfig {
    std::string architecture;  // the `architectures` entry, e.g. "Qwen3MoeForCausalLM"
    int64_t vocab_size = 0;
    int64_t hidden_dim = 0;
    int64_t n_layers = 0;
    int64_t n_heads = 0;
    int64_t n_kv_heads = 0;
    int64_t head_dim = 0;
    int64_t ffn_dim = 0;  // dense SwiGLU layers
    int64_t max_position_embeddings = 0;
    double rms_norm_eps = 1e-6;
    RopeConfig rope;
    bool tie_word_embeddings = false;
    bool qkv_bias = false;  // biases on q, k, v projections
    bool o_bias = false;    // bias on the output projection
    QkNorm qk_norm = QkNorm::None;
    double clip_qkv = 0.0;       // 0: none; else q, k, v clamped to [-clip, clip] (OLMoE)
    int64_t sliding_window = 0;  // 0: full attention
    // Set for DeepSeek-V2/V3, which then use MLA instead of q/k/v attention; head_dim is then
    // qk_rope_head_dim (the rotary width, as transformers sets it) and n_kv_heads == n_heads.
    std::optional<MlaConfig> mla;

    // Mixture of experts; n_experts == 0 for dense models.
    int64_t n_experts = 0;
    int64_t n_experts_active = 0;
    int64_t expert_ffn_dim = 0;
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

    std::optional<int32_t> bos_token_id;
    std::vector<int32_t> eos_token_ids;

    bool is_moe() const { return n_experts > 0; }
};

class ConfigReader {
  public:
    ConfigReader(const nlohmann::json& json, std::string origin);

    const nlohmann::json& json() const { return json_; }
    const std::string& origin() const { return origin_; }
    bool has(const std::string& key) const;  // present and not null

    int64_t positive_int(const std::string& key) const;
    // The first of `keys` present, as a positive integer (for keys renamed between versions).
    int64_t positive_int_of(std::initializer_list<const char*> keys) const;
    int64_t int_or(const std::string& key, int64_t fallback) const;
    double number(const std::string& key) const;
    double number_or(const std::string& key, double fallback) const;
    bool bool_or(const std::string& key, bool fallback) const;
    std::vector<int64_t> int_list_or_empty(const std::string& key) const;
    // An integer or a list of integers (token ids such as eos_token_id); empty when absent.
    std::vector<int32_t> token_ids(const std::string& key) const;

    [[noreturn]] void fail_key(const std::string& key, const std::string& problem) const;

  private:
    const nlohmann::json& json_;
    std::string origin_;
};

// Reads the keys every Llama-family decoder shares: sizes, heads, rope (rope_theta +
// rope_scaling, or transformers 5's rope_parameters), eps, max positions, tied embeddings.
void read_common_config(const ConfigReader& reader, ModelConfig& config);

// Marks layers as MoE the way Qwen2-MoE and Qwen3-MoE do: a layer is sparse unless listed in
// mlp_only_layers, and only every decoder_sparse_step-th layer is.
void read_sparse_layers(const ConfigReader& reader, ModelConfig& config);

// Checks invariants between fields (heads divide, top-k within experts, ...).
void validate_config(const ModelConfig& config, const std::string& origin);

}  // namespace tandem

// Reading ModelConfig (public, <tandem/model_config.h>): the hyperparameters of a decoder-only
// model, from config.json.
//
// Everything a checkpoint may override is read from its config.json (rope_theta, rope_scaling,
// rms_norm_eps, head_dim, ...); no architecture hard-codes what its file can say. Each
// architecture's reader (models/architectures/) fills this struct with its own key names.
// ConfigReader gives those readers typed access whose errors name the file and the key.
#pragma once

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <optional>
#include <string>
#include <vector>

#include <tandem/model_config.h>
#include <nlohmann/json.hpp>

namespace tandem {

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

// Which layers attend within a sliding window, as transformers decides. The window is
// sliding_window when use_sliding_window is true (else none). transformers 5 writes layer_types
// ("full_attention" | "sliding_attention" per layer) to config.json and it wins when present
// and the architecture reads it (LayerTypes::Read); otherwise `is_sliding(layer)` says (each
// architecture's rule).
enum class LayerTypes : uint8_t { Read, Ignore };
void read_sliding_layers(const ConfigReader& reader, ModelConfig& config, LayerTypes layer_types,
                         const std::function<bool(int64_t layer)>& is_sliding);

// Architectures whose transformers attention rotates the whole head: a partial_rotary_factor
// other than 1 is refused by name (transformers' default rope ignores it; its other rope types
// would fail), rather than honoured as GLM does.
void refuse_partial_rotary(const ConfigReader& reader, const ModelConfig& config);

// Checks invariants between fields (heads divide, top-k within experts, ...).
void validate_config(const ModelConfig& config, const std::string& origin);

}  // namespace tandem

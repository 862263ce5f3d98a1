#include "models/config.h"

#include <cmath>
#include <cstdint>

#include "kernels/error.h"

namespace tandem {

using Json = nlohmann::json;

ConfigReader::ConfigReader(const Json& json, std::string origin)
    : json_(json), origin_(std::move(origin)) {
    if (!json_.is_object()) fail(origin_, ": expected a JSON object, found ", json_.type_name());
}

bool ConfigReader::has(const std::string& key) const {
    auto it = json_.find(key);
    return it != json_.end() && !it->is_null();
}

void ConfigReader::fail_key(const std::string& key, const std::string& problem) const {
    fail(origin_, ": ", key, ": ", problem);
}

int64_t ConfigReader::positive_int(const std::string& key) const {
    if (!has(key)) fail_key(key, "missing");
    const int64_t value = int_or(key, 0);
    if (value <= 0) fail_key(key, cat("must be positive, found ", json_.at(key).dump()));
    return value;
}

int64_t ConfigReader::positive_int_of(std::initializer_list<const char*> keys) const {
    for (const char* key : keys)
        if (has(key)) return positive_int(key);
    std::string names;
    for (const char* key : keys)
        names += (names.empty() ? "" : " or ") + std::string(key);
    fail_key(names, "missing");
}

int64_t ConfigReader::int_or(const std::string& key, int64_t fallback) const {
    if (!has(key)) return fallback;
    const Json& value = json_.at(key);
    if (!value.is_number_integer()) fail_key(key, cat("expected an integer, found ", value.dump()));
    return value.get<int64_t>();
}

double ConfigReader::number(const std::string& key) const {
    if (!has(key)) fail_key(key, "missing");
    return number_or(key, 0.0);
}

double ConfigReader::number_or(const std::string& key, double fallback) const {
    if (!has(key)) return fallback;
    const Json& value = json_.at(key);
    if (!value.is_number()) fail_key(key, cat("expected a number, found ", value.dump()));
    const double result = value.get<double>();
    if (!std::isfinite(result)) fail_key(key, "must be finite");
    return result;
}

bool ConfigReader::bool_or(const std::string& key, bool fallback) const {
    if (!has(key)) return fallback;
    const Json& value = json_.at(key);
    if (!value.is_boolean()) fail_key(key, cat("expected true or false, found ", value.dump()));
    return value.get<bool>();
}

std::vector<int64_t> ConfigReader::int_list_or_empty(const std::string& key) const {
    std::vector<int64_t> out;
    if (!has(key)) return out;
    const Json& value = json_.at(key);
    if (!value.is_array()) fail_key(key, cat("expected a list of integers, found ", value.dump()));
    for (const Json& item : value) {
        if (!item.is_number_integer()) fail_key(key, cat("expected integers, found ", item.dump()));
        out.push_back(item.get<int64_t>());
    }
    return out;
}

std::vector<int32_t> ConfigReader::token_ids(const std::string& key) const {
    std::vector<int32_t> ids;
    if (!has(key)) return ids;
    const Json& value = json_.at(key);
    auto check = [&](const Json& item) {
        if (!item.is_number_integer() || item.get<int64_t>() < 0 || item.get<int64_t>() > INT32_MAX)
            fail_key(key, cat("expected token ids, found ", value.dump()));
        return int32_t(item.get<int64_t>());
    };
    if (value.is_array()) {
        for (const Json& item : value)
            ids.push_back(check(item));
    } else {
        ids.push_back(check(value));
    }
    return ids;
}

namespace {

void read_rope_scaling(const ConfigReader& scaling, RopeConfig& rope) {
    std::string type = "default";
    for (const char* key : {"rope_type", "type"}) {
        if (!scaling.has(key)) continue;
        if (!scaling.json().at(key).is_string()) scaling.fail_key(key, "expected a string");
        type = scaling.json().at(key).get<std::string>();
        break;
    }
    rope.type = type;
    if (type == "default") return;
    if (type == "linear") {
        rope.factor = scaling.number("factor");
        if (rope.factor <= 0) scaling.fail_key("factor", "must be positive");
        return;
    }
    if (type == "llama3") {
        rope.factor = scaling.number("factor");
        rope.low_freq_factor = scaling.number("low_freq_factor");
        rope.high_freq_factor = scaling.number("high_freq_factor");
        rope.original_max_position_embeddings =
            scaling.positive_int("original_max_position_embeddings");
        if (rope.high_freq_factor <= rope.low_freq_factor)
            scaling.fail_key("high_freq_factor", "must exceed low_freq_factor");
        return;
    }
    if (type == "yarn") {
        // factor may be null: read_common_config derives it from the context lengths.
        rope.factor = scaling.number_or("factor", 0.0);
        if (rope.factor < 0) scaling.fail_key("factor", "must be positive");
        rope.original_max_position_embeddings =
            scaling.int_or("original_max_position_embeddings", 0);
        // transformers: `get("beta_fast") or 32`, so 0 means the default as well.
        if (double b = scaling.number_or("beta_fast", 0.0); b != 0) rope.beta_fast = b;
        if (double b = scaling.number_or("beta_slow", 0.0); b != 0) rope.beta_slow = b;
        rope.mscale = scaling.number_or("mscale", 0.0);
        rope.mscale_all_dim = scaling.number_or("mscale_all_dim", 0.0);
        if (scaling.has("attention_factor"))
            rope.attention_factor = scaling.number("attention_factor");
        rope.truncate = scaling.bool_or("truncate", true);
        return;
    }
    scaling.fail_key("rope_type", cat("'", type,
                                      "' is not supported (supported: default, linear, llama3, "
                                      "yarn)"));
}

// yarn's context lengths as transformers resolves them: a top-level
// original_max_position_embeddings wins over the one in the rope dict, which defaults to
// max_position_embeddings; a null factor is their ratio.
void resolve_yarn(const ConfigReader& reader, ModelConfig& config) {
    RopeConfig& rope = config.rope;
    if (reader.has("original_max_position_embeddings"))
        rope.original_max_position_embeddings =
            reader.positive_int("original_max_position_embeddings");
    if (rope.original_max_position_embeddings <= 0)
        rope.original_max_position_embeddings = config.max_position_embeddings;
    if (rope.factor == 0)
        rope.factor =
            double(config.max_position_embeddings) / double(rope.original_max_position_embeddings);
}

}  // namespace

void read_common_config(const ConfigReader& reader, ModelConfig& config) {
    config.vocab_size = reader.positive_int("vocab_size");
    config.hidden_dim = reader.positive_int("hidden_size");
    config.n_layers = reader.positive_int("num_hidden_layers");
    config.n_heads = reader.positive_int("num_attention_heads");
    config.n_kv_heads = reader.has("num_key_value_heads")
                            ? reader.positive_int("num_key_value_heads")
                            : config.n_heads;
    config.head_dim = reader.has("head_dim") ? reader.positive_int("head_dim")
                                             : config.hidden_dim / config.n_heads;
    config.max_position_embeddings = reader.positive_int("max_position_embeddings");
    config.rms_norm_eps = reader.number_or("rms_norm_eps", 1e-6);
    config.tie_word_embeddings = reader.bool_or("tie_word_embeddings", false);

    // transformers 5 writes rope_parameters {rope_theta, rope_type, ...}; older files write
    // rope_theta at the top level and rope_scaling beside it.
    if (reader.has("rope_parameters")) {
        const ConfigReader rope(reader.json().at("rope_parameters"),
                                reader.origin() + ": rope_parameters");
        config.rope.theta = rope.number_or("rope_theta", reader.number_or("rope_theta", 10000.0));
        config.rope.partial_rotary_factor = rope.number_or("partial_rotary_factor", 1.0);
        read_rope_scaling(rope, config.rope);
    } else {
        config.rope.theta = reader.number_or("rope_theta", 10000.0);
        if (reader.has("rope_scaling"))
            read_rope_scaling(
                ConfigReader(reader.json().at("rope_scaling"), reader.origin() + ": rope_scaling"),
                config.rope);
    }
    config.rope.partial_rotary_factor =
        reader.number_or("partial_rotary_factor", config.rope.partial_rotary_factor);
    if (config.rope.theta <= 0) reader.fail_key("rope_theta", "must be positive");
    // Not a Hugging Face key: what the GGUF loader passes on from a rope_freqs tensor.
    if (reader.has("rope_freq_factors")) {
        const Json& factors = reader.json().at("rope_freq_factors");
        if (!factors.is_array()) reader.fail_key("rope_freq_factors", "expected a list");
        for (const Json& f : factors) {
            if (!f.is_number() || !(f.get<double>() > 0))
                reader.fail_key("rope_freq_factors", "expected positive numbers");
            config.rope.freq_factors.push_back(f.get<double>());
        }
    }
    if (config.rope.type == "yarn") resolve_yarn(reader, config);

    config.layer_is_moe.assign(size_t(config.n_layers), false);
}

void read_sparse_layers(const ConfigReader& reader, ModelConfig& config) {
    const int64_t step = reader.int_or("decoder_sparse_step", 1);
    if (step <= 0) reader.fail_key("decoder_sparse_step", "must be positive");
    const std::vector<int64_t> dense_layers = reader.int_list_or_empty("mlp_only_layers");
    for (int64_t layer = 0; layer < config.n_layers; ++layer) {
        bool listed = false;
        for (int64_t d : dense_layers)
            listed = listed || d == layer;
        config.layer_is_moe[size_t(layer)] =
            !listed && config.n_experts > 0 && (layer + 1) % step == 0;
    }
}

void read_sliding_layers(const ConfigReader& reader, ModelConfig& config, LayerTypes layer_types,
                         const std::function<bool(int64_t layer)>& is_sliding) {
    if (!reader.bool_or("use_sliding_window", false)) return;
    // transformers' default when the key is absent; null means no window at all.
    if (reader.json().contains("sliding_window") && !reader.has("sliding_window")) return;
    config.sliding_window =
        reader.has("sliding_window") ? reader.positive_int("sliding_window") : 4096;
    config.layer_is_sliding.assign(size_t(config.n_layers), false);
    if (layer_types == LayerTypes::Read && reader.has("layer_types")) {
        const Json& types = reader.json().at("layer_types");
        if (!types.is_array() || int64_t(types.size()) != config.n_layers)
            reader.fail_key("layer_types", cat("expected a list of ", config.n_layers, " strings"));
        for (size_t layer = 0; layer < types.size(); ++layer) {
            const Json& t = types[layer];
            if (t != "full_attention" && t != "sliding_attention")
                reader.fail_key("layer_types", cat(t.dump(),
                                                   " is not supported (full_attention, "
                                                   "sliding_attention)"));
            config.layer_is_sliding[layer] = t == "sliding_attention";
        }
        return;
    }
    for (int64_t layer = 0; layer < config.n_layers; ++layer)
        config.layer_is_sliding[size_t(layer)] = is_sliding(layer);
}

void refuse_partial_rotary(const ConfigReader& reader, const ModelConfig& config) {
    if (config.rope.partial_rotary_factor != 1.0)
        reader.fail_key("partial_rotary_factor",
                        cat(config.rope.partial_rotary_factor, " is not supported for ",
                            config.architecture, ", whose attention rotates the whole head"));
}

void validate_config(const ModelConfig& c, const std::string& origin) {
    if (c.n_heads % c.n_kv_heads != 0)
        fail(origin, ": num_attention_heads ", c.n_heads,
             " is not a multiple of num_key_value_heads ", c.n_kv_heads);
    const int64_t rotary_dim =
        int64_t(std::lround(double(c.head_dim) * c.rope.partial_rotary_factor));
    if (rotary_dim <= 0 || rotary_dim > c.head_dim || rotary_dim % 2 != 0)
        fail(origin, ": partial_rotary_factor ", c.rope.partial_rotary_factor, " gives rotary dim ",
             rotary_dim, " for head_dim ", c.head_dim);
    if (c.is_moe()) {
        if (c.n_experts_active <= 0 || c.n_experts_active > c.n_experts)
            fail(origin, ": num_experts_per_tok ", c.n_experts_active, " must be in [1, ",
                 c.n_experts, "]");
        if (c.expert_ffn_dim <= 0) fail(origin, ": expert intermediate size must be positive");
    }
    if (c.sliding_window < 0) fail(origin, ": sliding_window must be >= 0");
}

}  // namespace tandem

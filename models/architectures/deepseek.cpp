// DeepseekV2ForCausalLM and DeepseekV3ForCausalLM: multi-head latent attention
// (models/blocks/mla_attention_block.h), the first first_k_dense_replace layers dense, then MoE
// layers with always-on shared experts (one SwiGLU of n_shared_experts * moe_intermediate_size,
// no gate) and DeepSeek's routers (models/blocks/router.h):
//   V2: softmax scores, topk_method greedy or group_limited_greedy, weights * routed_scaling_factor
//   V3: sigmoid scores, e_score_correction_bias for the choice, noaux_tc groups, norm_topk_prob,
//       then * routed_scaling_factor
// V2 with norm_topk_prob true follows DeepSeek's own modeling_deepseek.py, the code its
// checkpoints were trained with and ship with: with more than one expert per token the top-k
// weights are renormalised and routed_scaling_factor is not applied (transformers 5.25 ignores
// norm_topk_prob for V2 and always scales; every published V2 config has it false, where the
// two agree). moe_layer_freq, which transformers ignores, follows DeepSeek's code
// (layer >= first_k_dense_replace and layer % moe_layer_freq == 0); every published checkpoint
// has 1, where both agree. The V3 router and its groups are shared with GLM-4.5
// (read_noaux_tc_routing, architectures.h).
// Defaults for absent keys are transformers' (DeepseekV2Config / DeepseekV3Config).
#include "kernels/error.h"
#include "models/architectures/architectures.h"
#include "models/decoder.h"

namespace tandem {

namespace {

std::string string_or(const ConfigReader& reader, const std::string& key, std::string fallback) {
    if (!reader.has(key)) return fallback;
    const nlohmann::json& value = reader.json().at(key);
    if (!value.is_string()) reader.fail_key(key, cat("expected a string, found ", value.dump()));
    return value.get<std::string>();
}

MlaConfig read_mla(const ConfigReader& reader, bool v3) {
    // q_lora_rank null means a full q_proj; absent, transformers would assume 1536.
    if (!reader.json().contains("q_lora_rank"))
        reader.fail_key("q_lora_rank", "missing (null for a full q_proj)");
    MlaConfig m;
    m.q_lora_rank = reader.has("q_lora_rank") ? reader.positive_int("q_lora_rank") : 0;
    m.kv_lora_rank = reader.positive_int("kv_lora_rank");
    m.qk_nope_head_dim = reader.positive_int("qk_nope_head_dim");
    m.qk_rope_head_dim = reader.positive_int("qk_rope_head_dim");
    m.v_head_dim = reader.positive_int("v_head_dim");
    if (m.qk_rope_head_dim % 2 != 0) reader.fail_key("qk_rope_head_dim", "must be even");
    // transformers' V2 always rotates interleaved pairs; V3 makes it a config switch.
    m.rope_interleave = v3 ? reader.bool_or("rope_interleave", true) : true;
    m.bias = reader.bool_or("attention_bias", false);
    // transformers and DeepSeek's code build q_a_layernorm and kv_a_layernorm without an eps
    // argument, so they keep RMSNorm's default whatever rms_norm_eps says (1e-6 in every
    // published config, where the two agree).
    m.latent_norm_eps = 1e-6;
    return m;
}

double read_scaling(const ConfigReader& reader, double fallback) {
    const double scaling = reader.number_or("routed_scaling_factor", fallback);
    if (scaling <= 0) reader.fail_key("routed_scaling_factor", "must be positive");
    return scaling;
}

void read_routing(const ConfigReader& reader, ModelConfig& config, bool v3) {
    const std::string scoring = string_or(reader, "scoring_func", v3 ? "sigmoid" : "softmax");
    const std::string method = string_or(reader, "topk_method", v3 ? "noaux_tc" : "greedy");
    if (v3) {
        if (scoring != "sigmoid") reader.fail_key("scoring_func", "V3 supports only sigmoid");
        if (method != "noaux_tc") reader.fail_key("topk_method", "V3 supports only noaux_tc");
        read_noaux_tc_routing(
            reader, config, {.routed_scaling_factor = 2.5, .n_group = RoutingDefaults::kRequired});
        return;
    }
    if (scoring != "softmax") reader.fail_key("scoring_func", "V2 supports only softmax");
    if (method == "greedy") {
        config.router_topk = RouterTopk::Greedy;
    } else if (method == "group_limited_greedy") {
        config.router_topk = RouterTopk::GroupLimitedGreedy;
    } else {
        reader.fail_key(
            "topk_method",
            cat("'", method, "' is not supported for V2 (greedy, group_limited_greedy)"));
    }
    config.routed_scaling_factor = read_scaling(reader, 1.0);
    // DeepSeek's V2 gate: `if top_k > 1 and norm_topk_prob: renormalise, else: * scaling`.
    if (reader.bool_or("norm_topk_prob", false) && config.n_experts_active > 1) {
        config.norm_topk_prob = true;
        config.routed_scaling_factor = 1.0;
    }
    if (config.router_topk != RouterTopk::Greedy)
        read_router_groups(reader, config, RoutingDefaults::kRequired);
}

}  // namespace

void read_router_groups(const ConfigReader& reader, ModelConfig& config, int64_t default_groups) {
    auto groups = [&](const char* key) {
        return default_groups == RoutingDefaults::kRequired ? reader.positive_int(key)
                                                            : reader.int_or(key, default_groups);
    };
    config.n_groups = groups("n_group");
    config.topk_groups = groups("topk_group");
    if (config.n_groups <= 0) reader.fail_key("n_group", "must be positive");
    if (config.topk_groups <= 0) reader.fail_key("topk_group", "must be positive");
    const int64_t group_size = config.n_experts / config.n_groups;
    if (config.n_experts % config.n_groups != 0)
        reader.fail_key("n_group", cat("does not divide n_routed_experts ", config.n_experts));
    if (config.topk_groups > config.n_groups ||
        config.n_experts_active > config.topk_groups * group_size)
        reader.fail_key("topk_group", cat(config.topk_groups, " groups of ", group_size,
                                          " cannot supply ", config.n_experts_active, " experts"));
    if (config.router_topk == RouterTopk::NoauxTc && group_size < 2)
        reader.fail_key("n_group", "noaux_tc needs at least 2 experts per group");
}

DecoderNames shared_experts_names() {
    DecoderNames names;
    names.shared_gate = "model.layers.{L}.mlp.shared_experts.gate_proj.weight";
    names.shared_up = "model.layers.{L}.mlp.shared_experts.up_proj.weight";
    names.shared_down = "model.layers.{L}.mlp.shared_experts.down_proj.weight";
    return names;
}

void read_noaux_tc_routing(const ConfigReader& reader, ModelConfig& config,
                           const RoutingDefaults& defaults) {
    config.router_scoring = RouterScoring::Sigmoid;
    config.router_topk = RouterTopk::NoauxTc;
    config.router_bias = true;
    config.norm_topk_prob = reader.bool_or("norm_topk_prob", true);
    config.routed_scaling_factor = read_scaling(reader, defaults.routed_scaling_factor);
    read_router_groups(reader, config, defaults.n_group);
}

namespace {

std::unique_ptr<Model> make_deepseek(const ConfigReader& reader, ModelConfig config,
                                     Checkpoint checkpoint, bool v3) {
    read_common_config(reader, config);
    config.mla = read_mla(reader, v3);
    // transformers sets head_dim = qk_rope_head_dim (the rotary width) and writes it to
    // config.json; Hub files lack it. Keys and values have all n_heads heads.
    config.head_dim = config.mla->qk_rope_head_dim;
    config.n_kv_heads = config.n_heads;
    config.rope.partial_rotary_factor = 1.0;
    // The latent attention's rope has goldens for these two; DeepSeek's softmax mscale is read
    // only with YaRN's parameters.
    if (config.rope.type != "default" && config.rope.type != "yarn")
        reader.fail_key("rope_type", cat("'", config.rope.type,
                                         "' is not supported with multi-head latent attention "
                                         "(supported: default, yarn)"));
    config.ffn_dim = reader.positive_int("intermediate_size");
    if (!v3 && reader.bool_or("mlp_bias", false))
        reader.fail_key("mlp_bias", "true is not supported");

    config.n_experts = reader.positive_int("n_routed_experts");
    config.n_experts_active = reader.positive_int("num_experts_per_tok");
    config.expert_ffn_dim = reader.positive_int("moe_intermediate_size");
    const int64_t n_shared = reader.json().contains("n_shared_experts")
                                 ? reader.int_or("n_shared_experts", 0)  // null: none
                                 : (v3 ? 1 : 2);
    if (n_shared < 0) reader.fail_key("n_shared_experts", "must be >= 0");
    config.shared_expert_ffn_dim = n_shared * config.expert_ffn_dim;
    config.shared_expert_gated = false;
    read_routing(reader, config, v3);

    const int64_t first_dense = reader.int_or("first_k_dense_replace", v3 ? 3 : 0);
    const int64_t freq = reader.int_or("moe_layer_freq", 1);
    if (first_dense < 0) reader.fail_key("first_k_dense_replace", "must be >= 0");
    if (freq <= 0) reader.fail_key("moe_layer_freq", "must be positive");
    for (int64_t layer = 0; layer < config.n_layers; ++layer)
        config.layer_is_moe[size_t(layer)] = layer >= first_dense && layer % freq == 0;
    validate_config(config, reader.origin());

    return std::make_unique<Decoder>(std::move(config), std::move(checkpoint),
                                     shared_experts_names());
}

}  // namespace

std::unique_ptr<Model> make_deepseek_v2(const ConfigReader& reader, ModelConfig config,
                                        Checkpoint checkpoint) {
    return make_deepseek(reader, std::move(config), std::move(checkpoint), false);
}

std::unique_ptr<Model> make_deepseek_v3(const ConfigReader& reader, ModelConfig config,
                                        Checkpoint checkpoint) {
    return make_deepseek(reader, std::move(config), std::move(checkpoint), true);
}

}  // namespace tandem

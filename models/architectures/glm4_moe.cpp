// Glm4MoeForCausalLM (GLM-4.5, GLM-4.5-Air, GLM-4.6): the first first_k_dense_replace layers
// dense, then MoE layers with DeepSeek-V3's router (read_noaux_tc_routing: sigmoid, selection
// bias, n_group / topk_group, norm_topk_prob, routed_scaling_factor; transformers' defaults 1, 1,
// true, 1.0) and always-on shared experts (n_shared_experts * moe_intermediate_size). Attention
// is grouped-query with q/k/v biases when attention_bias (o_proj never has one), an optional
// per-head q/k RMSNorm (use_qk_norm), and rotary embedding on the first partial_rotary_factor of
// each head only, rotate-half pairs (transformers' default 0.5 when the file says nothing; the
// Hub's configs carry it at the top level, transformers 5's inside rope_parameters).
//
// The checkpoints also hold num_nextn_predict_layers multi-token-prediction layers, stored as
// model.layers.{num_hidden_layers + i}.*: they are not decoder layers (transformers skips them
// too), so they stay unbound and are reported as unused tensors.
#include "kernels/error.h"
#include "kernels/log.h"
#include "models/architectures/architectures.h"
#include "models/decoder.h"

namespace tandem {

namespace {

bool rope_dict_has(const ConfigReader& reader, const char* key) {
    for (const char* dict : {"rope_parameters", "rope_scaling"}) {
        if (!reader.has(dict)) continue;
        const nlohmann::json& rope = reader.json().at(dict);
        if (rope.is_object() && rope.contains(key) && !rope.at(key).is_null()) return true;
    }
    return false;
}

}  // namespace

std::unique_ptr<Model> make_glm4_moe(const ConfigReader& reader, ModelConfig config,
                                     Checkpoint checkpoint) {
    read_common_config(reader, config);
    if (!reader.has("partial_rotary_factor") && !rope_dict_has(reader, "partial_rotary_factor"))
        config.rope.partial_rotary_factor = 0.5;
    config.ffn_dim = reader.positive_int("intermediate_size");
    config.qkv_bias = reader.bool_or("attention_bias", false);
    config.qk_norm = reader.bool_or("use_qk_norm", false) ? QkNorm::PerHead : QkNorm::None;

    config.n_experts = reader.positive_int_of({"n_routed_experts", "num_local_experts"});
    config.n_experts_active = reader.positive_int("num_experts_per_tok");
    config.expert_ffn_dim = reader.positive_int("moe_intermediate_size");
    const int64_t n_shared = reader.int_or("n_shared_experts", 1);
    if (n_shared < 0) reader.fail_key("n_shared_experts", "must be >= 0");
    config.shared_expert_ffn_dim = n_shared * config.expert_ffn_dim;
    read_noaux_tc_routing(reader, config, {.routed_scaling_factor = 1.0, .n_group = 1});

    const int64_t first_dense = reader.int_or("first_k_dense_replace", 1);
    if (first_dense < 0) reader.fail_key("first_k_dense_replace", "must be >= 0");
    for (int64_t layer = 0; layer < config.n_layers; ++layer)
        config.layer_is_moe[size_t(layer)] = layer >= first_dense;
    const int64_t mtp = reader.int_or("num_nextn_predict_layers", 0);
    if (mtp < 0) reader.fail_key("num_nextn_predict_layers", "must be >= 0");
    if (mtp > 0)
        log_info(reader.origin(), ": ", mtp,
                 " next-token prediction (MTP) layer(s) after the decoder are not used");
    validate_config(config, reader.origin());

    return std::make_unique<Decoder>(std::move(config), std::move(checkpoint),
                                     shared_experts_names());
}

}  // namespace tandem

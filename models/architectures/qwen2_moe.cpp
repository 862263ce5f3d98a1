// Qwen2MoeForCausalLM (Qwen1.5-MoE, Qwen2-57B-A14B): q/k/v biases, a shared expert whose output
// is scaled by sigmoid(shared_expert_gate · x), dense layers where mlp_only_layers or
// decoder_sparse_step say so, and norm_topk_prob (false by default). With use_sliding_window,
// transformers' Qwen2MoeConfig puts the window on the even layers below max_window_layers (or
// on those that config.json's layer_types names).
#include "models/architectures/architectures.h"
#include "models/decoder.h"

namespace tandem {

std::unique_ptr<Model> make_qwen2_moe(const ConfigReader& reader, ModelConfig config,
                                      Checkpoint checkpoint) {
    read_common_config(reader, config);
    config.ffn_dim = reader.positive_int("intermediate_size");
    config.n_experts = reader.positive_int_of({"num_experts", "num_local_experts"});
    config.n_experts_active = reader.positive_int("num_experts_per_tok");
    config.expert_ffn_dim = reader.positive_int("moe_intermediate_size");
    config.norm_topk_prob = reader.bool_or("norm_topk_prob", false);
    config.shared_expert_ffn_dim = reader.int_or("shared_expert_intermediate_size", 0);
    config.shared_expert_gated = config.shared_expert_ffn_dim > 0;
    config.qkv_bias = reader.bool_or("qkv_bias", true);
    refuse_partial_rotary(reader, config);
    const int64_t max_window_layers = reader.int_or("max_window_layers", 28);
    read_sliding_layers(reader, config, LayerTypes::Read,
                        [&](int64_t layer) { return layer % 2 == 0 && layer < max_window_layers; });
    read_sparse_layers(reader, config);
    validate_config(config, reader.origin());
    return std::make_unique<Decoder>(std::move(config), std::move(checkpoint), DecoderNames{});
}

}  // namespace tandem

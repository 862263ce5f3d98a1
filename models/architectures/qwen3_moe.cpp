// Qwen3MoeForCausalLM (Qwen3-30B-A3B, Qwen3-235B-A22B): RMSNorm on each head of q and k before
// RoPE, explicit head_dim, no shared expert, norm_topk_prob, optional attention_bias and dense
// layers per mlp_only_layers / decoder_sparse_step. use_sliding_window puts the window on every
// layer: transformers' Qwen3-MoE has no layer_types and ignores max_window_layers.
#include "models/architectures/architectures.h"
#include "models/decoder.h"

namespace tandem {

std::unique_ptr<Model> make_qwen3_moe(const ConfigReader& reader, ModelConfig config,
                                      Checkpoint checkpoint) {
    read_common_config(reader, config);
    config.ffn_dim = reader.int_or("intermediate_size", 0);
    config.n_experts = reader.positive_int_of({"num_experts", "num_local_experts"});
    config.n_experts_active = reader.positive_int("num_experts_per_tok");
    config.expert_ffn_dim = reader.positive_int("moe_intermediate_size");
    config.norm_topk_prob = reader.bool_or("norm_topk_prob", false);
    config.qkv_bias = config.o_bias = reader.bool_or("attention_bias", false);
    config.qk_norm = QkNorm::PerHead;
    refuse_partial_rotary(reader, config);
    read_sliding_layers(reader, config, LayerTypes::Ignore, [](int64_t) { return true; });
    read_sparse_layers(reader, config);
    for (bool moe : config.layer_is_moe)
        if (!moe && config.ffn_dim <= 0)
            reader.fail_key("intermediate_size", "needed by dense layers");
    validate_config(config, reader.origin());
    return std::make_unique<Decoder>(std::move(config), std::move(checkpoint), DecoderNames{});
}

}  // namespace tandem

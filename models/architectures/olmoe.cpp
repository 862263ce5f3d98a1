// OlmoeForCausalLM (OLMoE-1B-7B): RMSNorm over the whole q and k projections (not per head),
// optional clip_qkv, every layer sparse with experts of intermediate_size, norm_topk_prob false
// by default.
#include "models/architectures/architectures.h"
#include "models/decoder.h"

namespace tandem {

std::unique_ptr<Model> make_olmoe(const ConfigReader& reader, ModelConfig config,
                                  Checkpoint checkpoint) {
    read_common_config(reader, config);
    config.n_experts = reader.positive_int_of({"num_experts", "num_local_experts"});
    config.n_experts_active = reader.positive_int("num_experts_per_tok");
    config.expert_ffn_dim = reader.positive_int("intermediate_size");
    config.norm_topk_prob = reader.bool_or("norm_topk_prob", false);
    config.qkv_bias = config.o_bias = reader.bool_or("attention_bias", false);
    config.qk_norm = QkNorm::Full;
    config.clip_qkv = reader.number_or("clip_qkv", 0.0);
    config.layer_is_moe.assign(size_t(config.n_layers), true);
    refuse_partial_rotary(reader, config);
    validate_config(config, reader.origin());
    return std::make_unique<Decoder>(std::move(config), std::move(checkpoint), DecoderNames{});
}

}  // namespace tandem

// MixtralForCausalLM: every layer sparse, experts under block_sparse_moe with w1 (gate),
// w3 (up) and w2 (down); the top-k router weights are always renormalised. A sliding window,
// when the config sets one, limits attention to the last sliding_window positions.
#include "models/architectures/architectures.h"
#include "models/decoder.h"

namespace tandem {

std::unique_ptr<Model> make_mixtral(const ConfigReader& reader, ModelConfig config,
                                    Checkpoint checkpoint) {
    read_common_config(reader, config);
    config.n_experts = reader.positive_int_of({"num_local_experts", "num_experts"});
    config.n_experts_active = reader.positive_int("num_experts_per_tok");
    config.expert_ffn_dim = reader.positive_int("intermediate_size");
    config.norm_topk_prob = true;
    config.sliding_window = reader.int_or("sliding_window", 0);
    refuse_partial_rotary(reader, config);
    config.layer_is_moe.assign(size_t(config.n_layers), true);
    validate_config(config, reader.origin());

    DecoderNames names;
    names.router = "model.layers.{L}.block_sparse_moe.gate.weight";
    names.expert_gate = "model.layers.{L}.block_sparse_moe.experts.{E}.w1.weight";
    names.expert_up = "model.layers.{L}.block_sparse_moe.experts.{E}.w3.weight";
    names.expert_down = "model.layers.{L}.block_sparse_moe.experts.{E}.w2.weight";
    return std::make_unique<Decoder>(std::move(config), std::move(checkpoint), names);
}

}  // namespace tandem

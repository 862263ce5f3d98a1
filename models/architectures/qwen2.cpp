// Qwen2ForCausalLM: dense Qwen2/Qwen2.5 policies; biases on q, k, v (not o). With
// use_sliding_window, the layers from max_window_layers on attend within sliding_window (or
// those that config.json's layer_types names), as transformers' Qwen2Config decides.
#include "models/architectures/architectures.h"
#include "models/decoder.h"

namespace tandem {

std::unique_ptr<Model> make_qwen2(const ConfigReader& reader, ModelConfig config,
                                  Checkpoint checkpoint) {
    read_common_config(reader, config);
    config.ffn_dim = reader.positive_int("intermediate_size");
    config.qkv_bias = true;
    refuse_partial_rotary(reader, config);
    const int64_t max_window_layers = reader.int_or("max_window_layers", 28);
    read_sliding_layers(reader, config, LayerTypes::Read,
                        [&](int64_t layer) { return layer >= max_window_layers; });
    validate_config(config, reader.origin());
    return std::make_unique<Decoder>(std::move(config), std::move(checkpoint), DecoderNames{});
}

}  // namespace tandem

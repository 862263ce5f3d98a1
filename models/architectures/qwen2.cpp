// Qwen2ForCausalLM: dense Qwen2/Qwen2.5 policies; biases on q, k, v (not o). Sliding-window
// layers (use_sliding_window) are rejected rather than run with full attention.
#include "models/architectures/architectures.h"
#include "models/decoder.h"

namespace tandem {

std::unique_ptr<Model> make_qwen2(const ConfigReader& reader, ModelConfig config,
                                  Checkpoint checkpoint) {
    read_common_config(reader, config);
    config.ffn_dim = reader.positive_int("intermediate_size");
    config.qkv_bias = true;
    if (reader.bool_or("use_sliding_window", false))
        reader.fail_key("use_sliding_window", "true is not supported");
    validate_config(config, reader.origin());
    return std::make_unique<Decoder>(std::move(config), std::move(checkpoint), DecoderNames{});
}

}  // namespace tandem

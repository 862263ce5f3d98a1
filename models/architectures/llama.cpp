// LlamaForCausalLM: the dense policy architecture most post-training stacks produce (Llama 2/3,
// and Mistral-style checkpoints saved as Llama). rope_scaling llama3 is honoured;
// attention_bias puts biases on q, k, v and o.
#include "kernels/error.h"
#include "models/architectures/architectures.h"
#include "models/decoder.h"

namespace tandem {

std::unique_ptr<Model> make_llama(const ConfigReader& reader, ModelConfig config,
                                  Checkpoint checkpoint) {
    read_common_config(reader, config);
    config.ffn_dim = reader.positive_int("intermediate_size");
    config.qkv_bias = config.o_bias = reader.bool_or("attention_bias", false);
    if (reader.bool_or("mlp_bias", false)) reader.fail_key("mlp_bias", "true is not supported");
    refuse_partial_rotary(reader, config);
    validate_config(config, reader.origin());
    return std::make_unique<Decoder>(std::move(config), std::move(checkpoint), DecoderNames{});
}

}  // namespace tandem

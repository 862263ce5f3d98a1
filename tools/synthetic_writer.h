// Synthetic MoE models at the shapes of real ones (Mixtral-8x7B, Qwen3-30B-A3B, DeepSeek-V2-Lite,
// ...), with seeded
// random weights, for benchmarks on machines that hold no real checkpoint: tandem-bench's
// `--model synthetic:NAME`, and the same file handed to other engines (llama.cpp) for a side by
// side run.
//
// Two writers, both streaming tensor by tensor (a model larger than RAM can be written):
//   - safetensors + config.json with Hugging Face names, in f32, f16 or bf16;
//   - one GGUF file with llama.cpp's names and metadata, in any weight type Tandem's kernels read.
//     Quantized blocks are random bytes whose block scales are set to give each matrix about the
//     standard deviation the float writer uses: quantizing real numbers would cost minutes and
//     change nothing that a throughput benchmark measures. Matrices whose rows are not whole
//     blocks of the type fall back to q8_0 (then f16), as llama.cpp's quantizer falls back.
//     A placeholder SentencePiece vocabulary (byte tokens and numbered pieces) makes the file
//     loadable by llama.cpp, which refuses a model without one.
// The weights mean nothing: generated tokens are noise, only speed is measured.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kernels/dtype.h"

namespace tandem {

enum class SyntheticArch { Qwen3Moe, Olmoe, Mixtral, Qwen2Moe, DeepseekV2, Glm4Moe, GptOss };

// DeepSeek-V2's multi-head latent attention (models/blocks/mla_attention_block.h).
struct SyntheticMla {
    int64_t q_lora_rank = 0;  // 0: a full q_proj
    int64_t kv_lora_rank = 0;
    int64_t qk_nope_head_dim = 0;
    int64_t qk_rope_head_dim = 0;
    int64_t v_head_dim = 0;
};

struct SyntheticModelSpec {
    std::string name;  // the preset's name, e.g. "olmoe-1b-7b"
    SyntheticArch arch = SyntheticArch::Qwen3Moe;
    int64_t vocab_size = 0;
    int64_t hidden_dim = 0;
    int64_t n_layers = 0;
    int64_t n_heads = 0;
    int64_t n_kv_heads = 0;
    int64_t head_dim = 0;  // DeepseekV2: unused (mla has the widths)
    int64_t n_experts = 0;
    int64_t n_experts_active = 0;
    int64_t expert_ffn_dim = 0;
    // Qwen2-MoE's gated shared expert, or DeepSeek's ungated shared experts together
    // (n_shared_experts * expert_ffn_dim); 0: none.
    int64_t shared_expert_ffn_dim = 0;
    int64_t max_position_embeddings = 4096;
    double rope_theta = 10000.0;
    bool norm_topk_prob = false;
    uint64_t seed = 1;
    // GptOss: attention within sliding_window on even layers, full on odd ones.
    int64_t sliding_window = 0;
    // DeepseekV2 only: MLA and YaRN (factor 0: none) with mscale = mscale_all_dim as in
    // DeepSeek's configs. DeepseekV2 and Glm4Moe: the leading dense layers
    // (first_k_dense_replace) of dense_ffn_dim.
    SyntheticMla mla;
    int64_t n_dense_layers = 0;
    int64_t dense_ffn_dim = 0;
    double partial_rotary_factor = 1.0;  // Glm4Moe: rotary on this share of each head
    double yarn_factor = 0;
    int64_t yarn_original_context = 0;
    double yarn_mscale = 0;
};

// The presets, at the shapes of reference/models.md 3.2 (full depth; cut it with n_layers, which
// keeps DeepSeek's leading dense layer).
std::vector<std::string> synthetic_preset_names();
// Throws tandem::Error naming the known presets for any other name.
SyntheticModelSpec synthetic_preset(const std::string& name);

// Parameters of the whole model (embeddings and lm_head included).
int64_t synthetic_parameter_count(const SyntheticModelSpec& spec);

// config.json, generation_config.json and model.safetensors in `dir` (created if missing).
// `dtype`: f32, f16 or bf16. Returns the bytes written.
int64_t write_synthetic_safetensors(const std::string& dir, const SyntheticModelSpec& spec,
                                    DType dtype);

// One GGUF file at `path` with every weight matrix in `dtype` (norms, biases and routers in f32,
// as llama.cpp's converter stores them). Returns the bytes written.
int64_t write_synthetic_gguf(const std::string& path, const SyntheticModelSpec& spec, DType dtype);

}  // namespace tandem

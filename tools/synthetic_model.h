// Synthetic Hugging Face checkpoints with random weights at real shapes, for the main job and
// for benchmarks: config.json + generation_config.json + model.safetensors, written so that
// load_model() reads them like any downloaded model. Seeded: the same spec and seed give the
// same bytes.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "kernels/dtype.h"

namespace tandem {

struct SyntheticQwen3MoeSpec {
    int64_t vocab_size = 32768;
    int64_t hidden_dim = 768;
    int64_t n_layers = 8;
    int64_t n_heads = 12;
    int64_t n_kv_heads = 4;
    int64_t head_dim = 64;
    int64_t n_experts = 32;
    int64_t n_experts_active = 4;
    int64_t expert_ffn_dim = 256;
    int64_t max_position_embeddings = 4096;
    double rope_theta = 1000000.0;
    DType dtype = DType::BF16;
    uint64_t seed = 1;
};

// The default model of the main job: ~214M parameters, ~57M active per token.
SyntheticQwen3MoeSpec default_synthetic_spec();

// Called after each layer's weights are generated (layer 1..n_layers) and once more with
// layer = n_layers + 1 when the file is about to be written: tandem-synth's progress.
using SynthProgress = std::function<void(int64_t layer, int64_t n_layers)>;

// Writes the checkpoint into `dir` (created if missing). Returns the parameter count.
int64_t write_synthetic_qwen3_moe(const std::string& dir, const SyntheticQwen3MoeSpec& spec,
                                  const SynthProgress& on_progress = {});

}  // namespace tandem

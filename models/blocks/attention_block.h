// The attention block of a decoder layer: q/k/v projections (+ biases), optional q/k RMSNorm
// and clipping, RoPE, KV cache append, causal GQA attention per sequence (with gpt-oss's attention
// sinks when the weights have them), output projection.
#pragma once

#include <span>

#include "models/blocks/step.h"
#include "models/config.h"
#include "models/decoder.h"

namespace tandem {

// x: [n_tokens, hidden_dim] f32, already normalised; out: [n_tokens, hidden_dim] f32, overwritten.
// The projections are taken from `scratch` (attention_scratch_bytes) and freed on return.
void attention_block(const AttentionWeights& w, const ModelConfig& config, int layer,
                     std::span<const double> inv_freq, const StepLayout& step, const Tensor& x,
                     const Tensor& out, ThreadPool& pool, ScratchArena& scratch);

// The scratch bytes attention_block takes for n_tokens.
size_t attention_scratch_bytes(const ModelConfig& config, int64_t n_tokens);

}  // namespace tandem

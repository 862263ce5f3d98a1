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
void attention_block(const AttentionWeights& w, const ModelConfig& config, int layer,
                     std::span<const double> inv_freq, const StepLayout& step, const Tensor& x,
                     const Tensor& out, ThreadPool& pool);

}  // namespace tandem

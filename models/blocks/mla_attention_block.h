// Multi-head latent attention (DeepSeek-V2/V3) of a decoder layer, as transformers 5.24 computes
// it, with the KV cache holding the compressed latent instead of per-head keys and values.
//
// Per token: q = q_proj(x) or q_b(rms_norm(q_a(x))), split per head into q_nope and q_pe;
// [c, k_pe] = kv_a_proj_with_mqa(x), c = rms_norm(c) the latent of kv_lora_rank, k_pe one
// rotary key shared by all heads. The cache row of a position is [rope(k_pe) | c]
// (qk_rope_head_dim + kv_lora_rank floats; KvCacheShape{n_kv_heads 1, v_head_dim 0}).
//
// Path: absorbed, for decode and prefill alike. transformers expands the cache into per-head
// keys W_UK c and values W_UV c; here W_UK is folded into the query (q_lat = W_UKᵀ q_nope) and
// W_UV applied after attention (out = W_UV Σ p c), so attention reads the latent rows directly.
// For decode this is the cheaper path by far: expanding costs context * H * (nope + v) * R
// multiply-adds per step, absorbing H * (nope + v) * R per new token. For prefill of n new
// tokens the expanded path needs fewer FLOPs only when n > (nope + v) * R / (2R - nope - v)
// (about 170 for DeepSeek-V2-Lite), because absorbed attention works in R + P dims instead of
// nope + P and v; one path keeps prefill bit-for-bit consistent with decode and the cache layout
// single. An expanded prefill path for long chunks is a possible follow-up. W_UK and W_UV come
// from Hugging Face's kv_b or from GGUF's split k_b / v_b (MlaWeights), read in place either way.
//
// RoPE: DeepSeek's rotary pairs are interleaved (2i, 2i+1) (V2 always, V3 when
// rope_interleave); both q_pe and k_pe are de-interleaved before the rotate-half kernel, a
// permutation shared by q and k that leaves their dot products unchanged. YaRN's attention factor
// multiplies cos and sin of both, and the softmax scale is qk_head_dim^-0.5 * mscale_all_dim's
// mscale squared, as in transformers.
#pragma once

#include <span>

#include "models/blocks/step.h"
#include "models/config.h"
#include "models/decoder.h"

namespace tandem {

// x: [n_tokens, hidden_dim] f32, already normalised; out: [n_tokens, hidden_dim] f32, overwritten.
// The temporaries come from `scratch` (mla_attention_scratch_bytes) and are freed on return.
void mla_attention_block(const MlaWeights& w, const ModelConfig& config, int layer,
                         std::span<const double> inv_freq, const StepLayout& step, const Tensor& x,
                         const Tensor& out, ThreadPool& pool, ScratchArena& scratch);

// The scratch bytes mla_attention_block takes for n_tokens.
size_t mla_attention_scratch_bytes(const ModelConfig& config, int64_t n_tokens);

}  // namespace tandem

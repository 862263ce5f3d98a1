// The step ops of multi-head latent attention (DeepSeek-V2/V3) on a CUDA device, around
// latent_attention() (latent_attention.h); the same arithmetic as
// models/blocks/mla_attention_block.cpp on the CPU, which documents the absorbed form. Shapes,
// with H heads, D = nope + rope per query head, R = kv_lora_rank, P = rope, V = v_head_dim:
//   q [n, H * D]  kv [n, R + P]  rows [n, 1, P + R]  q_abs [n, H, P + R]
//   uk [H, R, nope]: per head W_UKᵀ   uv [H, V, R]: per head W_UV   (f32, device)
// The absorption products are batched over heads in one cublasSgemmStridedBatched each (f32:
// they carry the query into the 512-dim latent space, where bf16 rounding would show in every
// score). Every op launches on ctx's stream and returns without synchronizing.
#pragma once

#include <cstdint>

#include "kernels/cuda/context.h"
#include "kernels/tensor.h"

namespace tandem::cuda {

struct MlaShape {
    int64_t n_heads = 0, nope = 0, rope = 0, latent = 0, v = 0;
    bool interleaved = false;  // rotary pairs (2i, 2i + 1): de-interleaved for the RoPE kernel
};

// q_abs[:, h, :P] = q[:, h]'s rotary part, rows[:, 0, :P] = kv's rotary part (both
// de-interleaved), latent = kv[:, :R] (to be normalised, then placed by mla_latent_into_rows).
void mla_split(Context& ctx, const MlaShape& shape, const Tensor& q, const Tensor& kv,
               const Tensor& q_abs, const Tensor& rows, const Tensor& latent);

// rows[:, 0, P:] = latent.
void mla_latent_into_rows(Context& ctx, const MlaShape& shape, const Tensor& latent,
                          const Tensor& rows);

// q_abs[t, h, P:] = uk[h] · q_nope[t, h].
void mla_absorb_query(Context& ctx, const MlaShape& shape, const Tensor& q, const Tensor& uk,
                      const Tensor& q_abs);

// attn[t, h * V:(h + 1) * V] = uv[h] · lat[t, h]; lat [n, H, R], attn [n, H * V].
void mla_expand_values(Context& ctx, const MlaShape& shape, const Tensor& lat, const Tensor& uv,
                       const Tensor& attn);

}  // namespace tandem::cuda

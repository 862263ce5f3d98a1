// Causal grouped-query attention over a paged KV cache on a CUDA device, the semantics of
// kernels/cpu/attention.h (same arguments, with device memory), and the KV cache writes that
// feed it.
//
// Three kernels, chosen per call by attention():
// - decode (attention_decode.cu): every sequence one new token. Blocks per (sequence, KV head,
//   split of the keys) read K and V straight from the cache in 16-byte loads, enough splits to
//   fill the GPU (flash-decoding), partials merged by a combine kernel. f32 arithmetic: matches
//   the CPU to ~1e-6. attention_decode() is its graph-capturable entry point.
// - prefill (attention_prefill.cu): f16/bf16 caches (an f32 cache is the precision choice and
//   keeps f32 attention), every sequence >= 2 new tokens, dims multiples of 16 up to
//   128. Flash attention on tensor cores (mma.sync, bf16 operands, f32 accumulate and softmax):
//   matches the CPU to a few 1e-3 of the output scale.
// - tiles (attention.cu): everything else (mixed calls, other dims up to 256), f32 on CUDA
//   cores, tiles of up to 32 query rows with split-K where they would leave the GPU idle.
//
// Limits: head_dim and v_head_dim up to 256; f32, f16 or bf16 KV rows; f32 queries and outputs.
// Multi-head latent attention (DeepSeek's MLA) has its own kernel: latent_attention.h.
#pragma once

#include <compare>
#include <cstdint>
#include <span>

#include "kernels/cuda/context.h"
#include "kernels/kv_rows.h"
#include "kernels/tensor.h"

namespace tandem::cuda {

struct AttentionArgs {
    Tensor q;               // [n_new, n_heads, head_dim] f32 device tensor, after RoPE
    KvRows k_cache;         // rows of n_kv_heads x head_dim; base and block_table in device memory
    KvRows v_cache;         // rows of n_kv_heads x v_head_dim, the same blocks
    Tensor out;             // [n_new, n_heads, v_head_dim] f32 device tensor
    int64_t start_pos = 0;  // position of the first new token; its keys are in the cache
    float scale = 1.0f;     // usually 1 / sqrt(head_dim)
    int64_t sliding_window = 0;  // 0: full causal attention; else keys within the last W positions
    // gpt-oss's attention sinks: [n_heads] f32 in device memory (natural-log units of the scaled
    // scores), one more term of each row's softmax denominator; null: none.
    const float* sinks = nullptr;
};

// Decode calls (every sequence one new token, head_dim and v_head_dim multiples of 8 up to 256,
// one cache layout for all) take attention_decode's kernel after one small upload of the
// sequence table; anything else takes the tile kernel. Not capture-safe: it uploads tables from
// host memory.
void attention(Context& ctx, std::span<const AttentionArgs> sequences);

// Decode attention for CUDA graphs: one new token per sequence, and the per-sequence table in
// device memory that the caller fills (it may change between replays of a captured graph).
//
// The row of one sequence in that table, 48 bytes, read by the kernel.
struct DecodeSequence {
    const void* k_base = nullptr;       // the key block pool (KvRows::base)
    const void* v_base = nullptr;       // the value block pool
    const int32_t* k_blocks = nullptr;  // device block table of the keys; null: one block
    const int32_t* v_blocks = nullptr;  // device block table of the values
    int64_t position = 0;  // the new token's position; its key and value are in the cache
    int64_t reserved = 0;
};

// How a cache's rows are laid out (KvRows less the base and the block table), in elements.
struct KvLayout {
    DType dtype = DType::BF16;  // f32, f16 or bf16
    int64_t n_kv_heads = 0, head_dim = 0;
    int64_t block_size = 1, pos_stride = 0, head_stride = 0, block_stride = 0;
    auto operator<=>(const KvLayout&) const = default;
};
KvLayout layout_of(const KvRows& rows);

struct DecodeAttentionArgs {
    Tensor q;    // [batch, n_heads, head_dim] f32 device tensor, after RoPE
    Tensor out;  // [batch, n_heads, v_head_dim] f32 device tensor
    const DecodeSequence* sequences = nullptr;  // [batch] in device memory
    KvLayout k, v;
    // Keys any sequence may attend to at most (position + 1, or the sliding window): fixes the
    // launch shape, so a captured graph stays valid while every sequence stays within it.
    // Positions are not checked on the device: each must be < max_keys (without a window) and
    // inside its cache.
    int64_t max_keys = 0;
    float scale = 1.0f;
    int64_t sliding_window = 0;
    const float* sinks = nullptr;  // as AttentionArgs::sinks
};

// Whether attention_decode takes these arguments (dims, dtypes, 16-byte aligned strides); a
// false answer names nothing: attention_decode itself throws saying what is wrong.
bool decode_supported(const DecodeAttentionArgs& args);

// Capture-safe (two kernel launches on ctx's stream, nothing else) once the split-K scratch is
// allocated: call it once outside capture with the same batch, heads and max_keys (or larger)
// before capturing. Throws tandem::Error on bad arguments, before launching anything.
void attention_decode(Context& ctx, const DecodeAttentionArgs& args);

// Stores src [n, n_heads * head_dim] f32 (device) at positions [start, start + n) of `rows`,
// converted to rows.dtype with the bits of cache/kv_cache.h's write_rows (bf16 and f16 round to
// nearest even).
void write_kv(Context& ctx, const KvRows& rows, int64_t start, const Tensor& src);

// write_kv for a decode step, capture-safe: row b of k_src and v_src ([batch, n_kv_heads x
// head_dim] and [batch, n_kv_heads x v_head_dim] f32, device) goes to position
// sequences[b].position of sequence b's key and value caches (the table in device memory, as
// attention_decode reads it). One launch, nothing uploaded.
void write_kv_decode(Context& ctx, const DecodeSequence* sequences, const KvLayout& k,
                     const KvLayout& v, const Tensor& k_src, const Tensor& v_src);

}  // namespace tandem::cuda

// Internal to the CUDA attention files: the tensor-core prefill path that cuda::attention()
// (attention.cu) hands prefill calls to, and the KvRows -> KvView conversion both use.
// Plain C++, no CUDA headers.
#pragma once

#include <span>

#include "kernels/cuda/attention.h"
#include "kernels/cuda/attention_math.h"
#include "kernels/cuda/attention_plan.h"

namespace tandem::cuda {

// The device's view of a KvRows (block_table null for a contiguous tensor); throws naming
// `name` when a paged cache has no block table.
KvView view_of(const KvRows& rows, const char* name);

// One sequence of a call as the tile and prefill kernels read it from their uploaded table.
struct SequenceRow {
    const float* q;  // [n_new, n_heads, head_dim]
    float* out;      // [n_new, n_heads, v_dim]
    KvView k, v;
    int64_t n_heads, head_dim, v_dim, start_pos, window;
    float q_scale;       // scale x log2(e)
    const float* sinks;  // [n_heads] or null (sink_log2)
};
SequenceRow sequence_row(const AttentionArgs& a);
AttentionShape shape_of(const AttentionArgs& a);  // what the planners need of it

// Whether attention_prefill takes the call: every sequence has n_new >= 2, head_dim and
// v_head_dim multiples of 16 up to kPrefillMaxDim, at most kPrefillRows query heads per KV head,
// rows in whole 16-byte loads (strides multiples of 8 elements, 16-byte aligned bases, q and
// out), and arguments already checked by attention().
bool prefill_supported(std::span<const AttentionArgs> sequences);

void attention_prefill(Context& ctx, std::span<const AttentionArgs> sequences);

}  // namespace tandem::cuda

// Arithmetic of the CUDA attention kernels (attention.cu) shared with the CPU twin test: where a
// KV element lives in the paged cache, the rescaling of an online softmax when its running max
// grows, and the combine step of split-K (flash-decoding) partial results. Scores are kept in
// base 2 (queries scaled by scale x log2(e)), as in the CPU kernels.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>

#include "kernels/cuda/host_device.h"

namespace tandem::cuda {

// A KvRows as the device reads it: block_table is device memory, or null for a contiguous
// [capacity, n_heads, head_dim] tensor (a single block, number 0).
struct KvView {
    const std::byte* base = nullptr;
    const int32_t* block_table = nullptr;
    int64_t block_size = 1;
    int64_t pos_stride = 0, head_stride = 0, block_stride = 0;  // in elements
    FloatKind kind = FloatKind::F32;
    bool aligned4 = false;  // rows may be read 4 elements at a time (head_dim % 4 == 0, base)
};

// Element index of element 0 of head `head` at position `pos`.
TANDEM_HD int64_t kv_element(const KvView& v, int64_t pos, int64_t head) {
    const int64_t block = v.block_table != nullptr ? v.block_table[pos / v.block_size] : 0;
    return block * v.block_stride + pos % v.block_size * v.pos_stride + head * v.head_stride;
}

// The factor that rescales a running sum and output when the running max goes from m_old to
// m_new (>= m_old): 0 while nothing has been seen (m_old = -inf), so no inf - inf appears.
TANDEM_HD float softmax_rescale(float m_old, float m_new) {
    return m_old == -INFINITY ? 0.0f : exp2f(m_old - m_new);
}

// A split's partial result for one query row, as the split-K kernel writes it: the running max
// (base 2), the sum of 2^(score - max) and the unnormalised output, [2 + v_dim] floats.
struct PartialRow {
    static constexpr int kMax = 0, kSum = 1, kAcc = 2;
};

// gpt-oss's attention sinks: a learned logit per query head that joins the softmax's
// denominator and attends to no value, as in cpu::AttentionArgs::sinks. `sinks` holds them in
// natural-log units of the scaled scores (as the checkpoint does), or is null: the sink of `head`
// in base 2, -inf for none.
TANDEM_HD float sink_log2(const float* sinks, int64_t head) {
    return sinks != nullptr ? sinks[head] * 1.44269504088896340736f : -INFINITY;
}

// A row's output element from its unnormalised accumulator, the sum of 2^(score - m) and its
// running max m (base 2): acc / (sum + 2^(sink - m)), the sink's term 0 without one.
TANDEM_HD float softmax_output(float acc, float sum, float m, float sink2) {
    return acc / (sink2 == -INFINITY ? sum : sum + exp2f(sink2 - m));
}

// Output element d of one query row from its n_splits partial rows, `split_stride` floats apart:
// sum_s 2^(m_s - m) acc_s[d] / (sum_s 2^(m_s - m) l_s + 2^(sink2 - m)) with m the largest m_s.
// Splits that saw no key (m_s = -inf) weigh 0; sink2 = -inf: no sink.
TANDEM_HD float combine_partials(const float* partial, int64_t split_stride, int n_splits,
                                 int64_t d, float sink2 = -INFINITY) {
    float m = -INFINITY;
    for (int s = 0; s < n_splits; ++s)
        m = fmaxf(m, partial[s * split_stride + PartialRow::kMax]);
    float sum = 0.0f, acc = 0.0f;
    for (int s = 0; s < n_splits; ++s) {
        const float* row = partial + s * split_stride;
        const float w = softmax_rescale(row[PartialRow::kMax], m);
        sum += w * row[PartialRow::kSum];
        acc += w * row[PartialRow::kAcc + d];
    }
    return softmax_output(acc, sum, m, sink2);
}

// The keys [begin, end) that split `split` of a decode row reads: the row's query sits at
// `position` and sees positions [first, position] (first = position - window + 1 with a sliding
// window, else 0); split s takes split_keys of them from first + s x split_keys on. A split past
// the row's keys gets an empty range (it writes a partial that combine_partials weighs 0).
struct KeyRange {
    int64_t begin, end;
};
TANDEM_HD KeyRange decode_split_range(int64_t position, int64_t window, int64_t split,
                                      int64_t split_keys) {
    const int64_t first = window > 0 && position - window + 1 > 0 ? position - window + 1 : 0;
    const int64_t begin = first + split * split_keys;
    const int64_t end = begin + split_keys < position + 1 ? begin + split_keys : position + 1;
    return {begin, end > begin ? end : begin};
}

}  // namespace tandem::cuda

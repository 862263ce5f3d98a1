// KvCache: the keys and values of one sequence, every layer, in host memory.
//
// Layout per layer: keys [capacity, n_kv_heads, head_dim], values [capacity, n_kv_heads,
// v_head_dim], f32, position-major so that appending a step's tokens is one contiguous copy and
// attention streams positions in order. `length` counts the positions already filled; a forward
// step writes positions [length, length + n_new) of every layer and then commits them.
// v_head_dim 0 means no values tensor: multi-head latent attention (DeepSeek) caches one latent
// row per position in `keys` (n_kv_heads 1) and reads its values out of that same row.
// Capacity is fixed at creation (the sequence's context budget); paged blocks replace this when
// the batcher needs to share memory between many sequences.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/tensor.h"

namespace tandem {

struct KvCacheShape {
    int n_layers = 0;
    int64_t n_kv_heads = 0;
    int64_t head_dim = 0;
    int64_t v_head_dim = 0;  // 0: keys only (latent cache)
    int64_t capacity = 0;    // positions
};

class KvCache {
  public:
    explicit KvCache(const KvCacheShape& shape);

    const KvCacheShape& shape() const { return shape_; }
    int64_t length() const { return length_; }
    int64_t capacity() const { return shape_.capacity; }

    Tensor keys(int layer) const;    // [capacity, n_kv_heads, head_dim]
    Tensor values(int layer) const;  // [capacity, n_kv_heads, v_head_dim]; empty if v_head_dim 0

    // Marks n more positions as filled; throws if that exceeds the capacity.
    void commit(int64_t n);
    // Forgets positions from `length` on (to reuse a prefix or restart the sequence).
    void truncate(int64_t length);

    size_t bytes() const;

  private:
    KvCacheShape shape_;
    int64_t length_ = 0;
    std::vector<OwnedTensor> keys_, values_;
};

}  // namespace tandem

// The paged KV cache: a KvBlockPool holds every layer's keys and values for a fixed number of
// blocks of `block_size` positions (one allocation per layer and tensor, sized from a memory
// budget), and each sequence's KvCache is a block table into it that grows as the sequence does.
// Sequences of any length share the memory without fragmentation; a finished sequence returns
// its blocks at once.
//
// Rows: keys n_kv_heads x head_dim per position, values n_kv_heads x v_head_dim, in the shape's
// dtype (f32, f16 or bf16: one per engine, so a block's bytes and the number of positions a
// memory budget holds follow it). Rows arrive in f32 and are rounded on write. Within a block
// each head's positions are adjacent (kernels/kv_rows.h says why).
// `length` counts the positions already filled; a forward step writes positions
// [length, length + n_new) of every layer (after reserve() made room) and then commits them.
// v_head_dim 0 means no values: multi-head latent attention (DeepSeek) caches one latent row per
// position in `keys` (n_kv_heads 1) and reads its values out of that same row.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "kernels/kv_rows.h"
#include "kernels/tensor.h"

namespace tandem {

struct KvCacheShape {
    int n_layers = 0;
    int64_t n_kv_heads = 0;
    int64_t head_dim = 0;
    int64_t v_head_dim = 0;    // 0: keys only (latent cache)
    int64_t capacity = 0;      // positions (a pool ignores it)
    DType dtype = DType::F32;  // of the stored rows: f32, f16 or bf16
    Device device;             // where the blocks live: the CPU, or cuda:N for a model on the GPU
};

class KvBlockPool {
  public:
    KvBlockPool(const KvCacheShape& shape, int64_t block_size, int64_t n_blocks);
    KvBlockPool(const KvBlockPool&) = delete;
    KvBlockPool& operator=(const KvBlockPool&) = delete;

    // Bytes one block of `block_size` positions takes over all layers, keys and values.
    static size_t bytes_per_block(const KvCacheShape& shape, int64_t block_size);

    const KvCacheShape& shape() const { return shape_; }
    int64_t block_size() const { return block_size_; }
    int64_t total_blocks() const { return n_blocks_; }
    int64_t free_blocks() const;

    // A free block's id, or -1 when none is left. Thread-safe.
    int32_t allocate();
    void release(int32_t block);

    KvRows keys(int layer, const int32_t* table, int64_t capacity) const;
    KvRows values(int layer, const int32_t* table, int64_t capacity) const;

  private:
    KvCacheShape shape_;
    int64_t block_size_;
    int64_t n_blocks_;
    std::vector<OwnedTensor> keys_, values_;  // per layer [n_blocks, heads, block_size, dim]
    mutable std::mutex mutex_;
    std::vector<int32_t> free_;
};

class KvCache {
  public:
    // A standalone cache of shape.capacity positions with a pool of its own (tests, tools).
    explicit KvCache(const KvCacheShape& shape);
    // A cache of up to max_positions positions whose blocks come from `pool` as it grows.
    KvCache(std::shared_ptr<KvBlockPool> pool, int64_t max_positions);
    ~KvCache();
    KvCache(const KvCache&) = delete;
    KvCache& operator=(const KvCache&) = delete;

    const KvCacheShape& shape() const { return pool_->shape(); }
    int64_t length() const { return length_; }
    // Positions the blocks held now cover; reserve() raises it up to max_positions().
    int64_t capacity() const { return int64_t(table_.size()) * pool_->block_size(); }
    int64_t max_positions() const { return max_positions_; }
    int64_t blocks() const { return int64_t(table_.size()); }

    // Makes room for `positions` positions in all. False (holding what it had) when the pool
    // has too few free blocks; throws when positions exceeds max_positions().
    bool reserve(int64_t positions);

    KvRows keys(int layer) const;
    KvRows values(int layer) const;  // empty if v_head_dim is 0

    // Marks n more positions as filled; throws if that exceeds the capacity.
    void commit(int64_t n);
    // Forgets positions from `length` on (to reuse a prefix or restart the sequence).
    void truncate(int64_t length);
    // Copies the first n positions of `other` (same pool shape) into this cache, which must be
    // empty: the prompt of a request with n > 1 samples is computed once and then forked.
    void copy_prefix_from(const KvCache& other, int64_t n);

    size_t bytes() const;  // of the blocks held

  private:
    std::shared_ptr<KvBlockPool> pool_;
    std::vector<int32_t> table_;
    int64_t max_positions_ = 0;
    int64_t length_ = 0;
};

// Stores n rows of src (n x rows.row_elements() floats) at positions [start, start + n),
// converted to rows.dtype (bf16 rounds to nearest even, f16 as IEEE does). Host blocks only: a
// cache on a CUDA device is written by cuda::write_kv.
void write_rows(const KvRows& rows, int64_t start, const float* src, int64_t n);

}  // namespace tandem

// The paged KV cache: a KvBlockPool holds every layer's keys and values for a fixed number of
// blocks of `block_size` positions (one allocation per layer and tensor, sized from a memory
// budget), and each sequence's KvCache is a block table into it that grows as the sequence does.
// Sequences of any length share the memory without fragmentation; a finished sequence returns
// its blocks at once.
//
// Blocks are reference counted: a full block can sit in several block tables at once (the n
// samples of a request share their prompt's full blocks; later requests share cached prefixes).
// Only full blocks are ever shared, and a forward step writes only positions from a cache's
// `length` on, which lie in its own private blocks: a shared block is never written again, so no
// copy-on-write is needed. The partly filled last block of a prompt stays private (a fork copies
// it).
//
// Automatic prefix caching (as vLLM's v1 KV cache manager does it): a full block is keyed by a
// hash chain, hash(parent block's hash, the block's token ids), rooted in a value that changes
// with reset_prefix_cache() (new weights make every cached row stale). publish() enters a
// sequence's full blocks into the table; attach_cached_prefix() lets a new sequence take the
// longest chain of them that starts its tokens instead of computing those positions. A block
// whose last holder lets go stays cached in an LRU list and is evicted only when allocate() has
// no never-used or unpublished block left; the least recently released goes first (a sequence
// releases its blocks last first, so a prompt's tail goes before its head, which more requests
// share). A hit is checked against the stored parent hash and token ids, so a 64-bit collision
// cannot hand out another prefix's rows.
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
#include <list>
#include <memory>
#include <mutex>
#include <span>
#include <unordered_map>
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

using BlockHash = uint64_t;

// The key of a full block of prefix-cache content: its parent's key and its own token ids.
BlockHash hash_block(BlockHash parent, std::span<const int32_t> tokens);

struct KvPoolStats {
    int64_t total = 0;
    int64_t used = 0;    // held by at least one sequence
    int64_t cached = 0;  // held by none, still in the prefix cache (evicted on demand)
    int64_t free = 0;    // held by none and holding nothing reusable
    // Positions asked of attach_cached_prefix() and those found cached (prefill saved).
    int64_t prefix_queries = 0;
    int64_t prefix_hits = 0;
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
    // Blocks allocate() can hand out: the never-used and the cached ones no sequence holds.
    int64_t free_blocks() const;
    KvPoolStats stats() const;

    // A block held once, or -1 when every block is held. Takes a never-used block first, else
    // evicts the least recently released cached block. Thread-safe, as is everything here.
    int32_t allocate();
    void acquire(int32_t block);  // one more holder of a block someone holds
    void release(int32_t block);  // one holder fewer; the last one's release frees or caches it

    // The prefix cache. The root of every hash chain; it changes with each reset.
    BlockHash root_hash() const;
    uint64_t epoch() const;
    // The cached block keyed (parent, tokens), acquired for the caller, or -1.
    int32_t lookup(BlockHash parent, std::span<const int32_t> tokens);
    // Enters a held, full block under (parent, tokens); a key already cached keeps its block.
    void publish(int32_t block, BlockHash parent, std::span<const int32_t> tokens);
    // Counts one attach_cached_prefix(): positions asked and found.
    void count_lookup(int64_t queried, int64_t hit);
    // Forgets every cached block (their rows came from weights that are gone).
    void reset_prefix_cache();

    KvRows keys(int layer, const int32_t* table, int64_t capacity) const;
    KvRows values(int layer, const int32_t* table, int64_t capacity) const;

  private:
    struct Block {
        int32_t holders = 0;
        bool cached = false;  // in by_hash_ under hash
        BlockHash hash = 0, parent = 0;
        std::vector<int32_t> tokens;          // the key's token ids, checked on a hit
        std::list<int32_t>::iterator in_lru;  // when cached and held by none
    };
    void forget_locked(int32_t block);  // out of the prefix cache

    KvCacheShape shape_;
    int64_t block_size_;
    int64_t n_blocks_;
    std::vector<OwnedTensor> keys_, values_;  // per layer [n_blocks, heads, block_size, dim]
    mutable std::mutex mutex_;
    std::vector<Block> blocks_;
    std::vector<int32_t> free_;  // held by none, not cached; handed out from the back
    std::list<int32_t> lru_;     // cached and held by none, least recently released first
    std::unordered_map<BlockHash, int32_t> by_hash_;
    uint64_t epoch_ = 0;
    int64_t prefix_queries_ = 0, prefix_hits_ = 0;
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
    // Releases every block (last first) and empties the cache (preemption, a finished sample).
    void clear();
    // Gives this empty cache the first n positions of `other` (same pool): its full blocks are
    // shared, the partly filled one is copied into a block of this cache's own. False, holding
    // nothing, when no block is free for that copy. The prompt of a request with n > 1 samples
    // is computed once and then forked.
    bool share_prefix_from(const KvCache& other, int64_t n);

    // Prefix caching. On an empty cache: takes the longest chain of cached full blocks that
    // starts `tokens`, leaving at least one token to compute (its logits are wanted), and
    // returns the positions it covers (length() becomes that).
    int64_t attach_cached_prefix(std::span<const int32_t> tokens);
    // Publishes the full blocks among positions [0, length()), whose token ids are
    // tokens[0, length()). Does nothing once the pool's prefix cache has been reset since this
    // cache started: its rows may come from the old weights.
    void publish(std::span<const int32_t> tokens);

    size_t bytes() const;  // of the blocks held

  private:
    std::shared_ptr<KvBlockPool> pool_;
    std::vector<int32_t> table_;
    std::vector<BlockHash> hashes_;  // chain keys of table_'s first full blocks, as far as known
    uint64_t epoch_ = 0;             // of the pool's prefix cache when this cache started
    int64_t max_positions_ = 0;
    int64_t length_ = 0;
};

// Stores n rows of src (n x rows.row_elements() floats) at positions [start, start + n),
// converted to rows.dtype (bf16 rounds to nearest even, f16 as IEEE does). Host blocks only: a
// cache on a CUDA device is written by cuda::write_kv.
void write_rows(const KvRows& rows, int64_t start, const float* src, int64_t n);

}  // namespace tandem

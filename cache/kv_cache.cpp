#include "cache/kv_cache.h"

#include <algorithm>
#include <cstring>

#include "kernels/cpu/vec_dot.h"
#include "kernels/error.h"
#include "kernels/stream.h"

namespace tandem {

namespace {

void check_shape(const KvCacheShape& shape) {
    if (shape.n_layers <= 0 || shape.n_kv_heads <= 0 || shape.head_dim <= 0 || shape.v_head_dim < 0)
        fail("KV cache: every dimension must be positive (layers ", shape.n_layers, ", kv heads ",
             shape.n_kv_heads, ", head_dim ", shape.head_dim, ", v_head_dim ", shape.v_head_dim,
             " (0: keys only))");
    if (!is_kv_cache_type(shape.dtype))
        fail("KV cache: rows of ", dtype_name(shape.dtype), " are not supported (f32, f16, bf16)");
}

}  // namespace

BlockHash hash_block(BlockHash parent, std::span<const int32_t> tokens) {
    // splitmix64's finalizer over the chain: every bit of every token reaches every bit.
    auto mix = [](uint64_t z) {
        z += 0x9e3779b97f4a7c15ULL;
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        return z ^ (z >> 31);
    };
    uint64_t h = mix(parent ^ uint64_t(tokens.size()));
    for (int32_t t : tokens)
        h = mix(h ^ uint32_t(t));
    return h;
}

KvBlockPool::KvBlockPool(const KvCacheShape& shape, int64_t block_size, int64_t n_blocks)
    : shape_(shape), block_size_(block_size), n_blocks_(n_blocks) {
    check_shape(shape);
    if (block_size <= 0 || n_blocks <= 0 || n_blocks > INT32_MAX)
        fail("KV block pool: block size ", block_size, " and ", n_blocks,
             " blocks must be positive");
    for (int layer = 0; layer < shape.n_layers; ++layer) {
        keys_.push_back(make_tensor(
            shape.dtype, {n_blocks, shape.n_kv_heads, block_size, shape.head_dim}, shape.device));
        if (shape.v_head_dim > 0)
            values_.push_back(
                make_tensor(shape.dtype, {n_blocks, shape.n_kv_heads, block_size, shape.v_head_dim},
                            shape.device));
    }
    blocks_.resize(size_t(n_blocks));
    // Handed out lowest id first, so a lightly used pool touches only its first pages.
    free_.resize(size_t(n_blocks));
    for (int64_t i = 0; i < n_blocks; ++i)
        free_[size_t(i)] = int32_t(n_blocks - 1 - i);
}

size_t KvBlockPool::bytes_per_block(const KvCacheShape& shape, int64_t block_size) {
    return size_t(shape.n_layers) * size_t(block_size) * size_t(shape.n_kv_heads) *
           size_t(shape.head_dim + shape.v_head_dim) * size_t(dtype_block_bytes(shape.dtype));
}

int64_t KvBlockPool::free_blocks() const {
    std::lock_guard lock(mutex_);
    return int64_t(free_.size() + lru_.size());
}

KvPoolStats KvBlockPool::stats() const {
    std::lock_guard lock(mutex_);
    return {.total = n_blocks_,
            .used = n_blocks_ - int64_t(free_.size() + lru_.size()),
            .cached = int64_t(lru_.size()),
            .free = int64_t(free_.size()),
            .prefix_queries = prefix_queries_,
            .prefix_hits = prefix_hits_};
}

void KvBlockPool::forget_locked(int32_t block) {
    Block& b = blocks_[size_t(block)];
    if (!b.cached) return;
    by_hash_.erase(b.hash);
    b.cached = false;
    b.tokens.clear();
}

int32_t KvBlockPool::allocate() {
    std::lock_guard lock(mutex_);
    int32_t block = -1;
    if (!free_.empty()) {
        block = free_.back();
        free_.pop_back();
    } else if (!lru_.empty()) {
        block = lru_.front();
        lru_.pop_front();
        forget_locked(block);
    } else {
        return -1;
    }
    blocks_[size_t(block)].holders = 1;
    return block;
}

void KvBlockPool::acquire(int32_t block) {
    std::lock_guard lock(mutex_);
    Block& b = blocks_.at(size_t(block));
    if (b.holders == 0) fail("KV block pool: block ", block, " is not held by anyone");
    ++b.holders;
}

void KvBlockPool::release(int32_t block) {
    std::lock_guard lock(mutex_);
    Block& b = blocks_.at(size_t(block));
    if (b.holders <= 0) fail("KV block pool: block ", block, " released more often than held");
    if (--b.holders > 0) return;
    if (b.cached) {
        b.in_lru = lru_.insert(lru_.end(), block);
    } else {
        free_.push_back(block);
    }
}

BlockHash KvBlockPool::root_hash() const {
    std::lock_guard lock(mutex_);
    return hash_block(epoch_, {});
}

uint64_t KvBlockPool::epoch() const {
    std::lock_guard lock(mutex_);
    return epoch_;
}

int32_t KvBlockPool::lookup(BlockHash parent, std::span<const int32_t> tokens) {
    std::lock_guard lock(mutex_);
    const auto it = by_hash_.find(hash_block(parent, tokens));
    if (it == by_hash_.end()) return -1;
    Block& b = blocks_[size_t(it->second)];
    if (b.parent != parent ||
        !std::equal(tokens.begin(), tokens.end(), b.tokens.begin(), b.tokens.end()))
        return -1;  // a collision of the 64-bit keys
    if (b.holders++ == 0) lru_.erase(b.in_lru);
    return it->second;
}

void KvBlockPool::publish(int32_t block, BlockHash parent, std::span<const int32_t> tokens) {
    if (int64_t(tokens.size()) != block_size_)
        fail("KV block pool: only full blocks are cached, not ", tokens.size(), " positions");
    std::lock_guard lock(mutex_);
    Block& b = blocks_.at(size_t(block));
    if (b.holders == 0) fail("KV block pool: cannot publish block ", block, ", held by none");
    if (b.cached) return;
    const BlockHash hash = hash_block(parent, tokens);
    if (!by_hash_.emplace(hash, block).second) return;  // computed twice; the first one stays
    b.cached = true;
    b.hash = hash;
    b.parent = parent;
    b.tokens.assign(tokens.begin(), tokens.end());
}

void KvBlockPool::count_lookup(int64_t queried, int64_t hit) {
    std::lock_guard lock(mutex_);
    prefix_queries_ += queried;
    prefix_hits_ += hit;
}

void KvBlockPool::reset_prefix_cache() {
    std::lock_guard lock(mutex_);
    ++epoch_;
    for (const auto& [hash, block] : by_hash_) {
        Block& b = blocks_[size_t(block)];
        b.cached = false;
        b.tokens.clear();
        if (b.holders == 0) {
            lru_.erase(b.in_lru);
            free_.push_back(block);
        }
    }
    by_hash_.clear();
}

KvRows KvBlockPool::keys(int layer, const int32_t* table, int64_t capacity) const {
    return KvRows(keys_.at(size_t(layer)).view.data(), table, block_size_, shape_.n_kv_heads,
                  shape_.head_dim, capacity, shape_.dtype);
}

KvRows KvBlockPool::values(int layer, const int32_t* table, int64_t capacity) const {
    if (shape_.v_head_dim == 0) return KvRows();
    return KvRows(values_.at(size_t(layer)).view.data(), table, block_size_, shape_.n_kv_heads,
                  shape_.v_head_dim, capacity, shape_.dtype);
}

KvCache::KvCache(const KvCacheShape& shape) : max_positions_(shape.capacity) {
    if (shape.capacity <= 0) fail("KV cache: capacity must be positive, got ", shape.capacity);
    pool_ = std::make_shared<KvBlockPool>(shape, shape.capacity, 1);
    reserve(shape.capacity);
}

KvCache::KvCache(std::shared_ptr<KvBlockPool> pool, int64_t max_positions)
    : pool_(std::move(pool)), epoch_(pool_->epoch()), max_positions_(max_positions) {
    if (max_positions <= 0) fail("KV cache: max_positions must be positive, got ", max_positions);
}

KvCache::~KvCache() {
    clear();
}

void KvCache::clear() {
    for (auto block = table_.rbegin(); block != table_.rend(); ++block)
        pool_->release(*block);
    table_.clear();
    hashes_.clear();
    length_ = 0;
    epoch_ = pool_->epoch();
}

bool KvCache::reserve(int64_t positions) {
    if (positions > max_positions_)
        fail("KV cache: ", positions, " positions exceed the sequence's limit of ", max_positions_);
    while (capacity() < positions) {
        const int32_t block = pool_->allocate();
        if (block < 0) return false;
        table_.push_back(block);
    }
    return true;
}

KvRows KvCache::keys(int layer) const {
    return pool_->keys(layer, table_.data(), capacity());
}

KvRows KvCache::values(int layer) const {
    return pool_->values(layer, table_.data(), capacity());
}

void KvCache::commit(int64_t n) {
    if (n < 0 || length_ + n > capacity())
        fail("KV cache: ", length_, " + ", n, " positions exceed the capacity of ", capacity());
    length_ += n;
}

bool KvCache::share_prefix_from(const KvCache& other, int64_t n) {
    if (length_ != 0 || !table_.empty() || n > other.length_ || pool_ != other.pool_ ||
        n > max_positions_)
        fail("KV cache: cannot share ", n, " positions of a cache holding ", other.length_,
             " into one holding ", length_);
    const int64_t block_size = pool_->block_size(), full = n / block_size, rest = n % block_size;
    int32_t own = -1;
    if (rest > 0 && (own = pool_->allocate()) < 0) return false;
    for (int64_t i = 0; i < full; ++i) {
        pool_->acquire(other.table_[size_t(i)]);
        table_.push_back(other.table_[size_t(i)]);
    }
    // The shared rows are as old as the other cache's: so is this one's right to publish.
    epoch_ = other.epoch_;
    hashes_.assign(other.hashes_.begin(),
                   other.hashes_.begin() +
                       std::min<std::ptrdiff_t>(std::ptrdiff_t(other.hashes_.size()), full));
    length_ = n;
    if (own < 0) return true;
    table_.push_back(own);
    // In the partly filled block each head's first positions are one run (a block is
    // [n_heads, block_size, dim]). Device blocks are copied on a stream of their device, so the
    // same code serves a cache on the GPU.
    const std::unique_ptr<Stream> stream =
        shape().device.is_cpu() ? nullptr : make_stream(shape().device);
    const int64_t first = full * block_size;
    for (int layer = 0; layer < shape().n_layers; ++layer) {
        for (const auto& [from, to] : {std::pair{other.keys(layer), keys(layer)},
                                       std::pair{other.values(layer), values(layer)}}) {
            if (from.empty()) continue;
            const auto bytes = size_t(rest * from.head_dim * from.element_bytes());
            for (int64_t head = 0; head < from.n_heads; ++head) {
                if (stream)
                    stream->copy_async(to.at(first, head), from.at(first, head), bytes,
                                       CopyDirection::DeviceToDevice);
                else
                    std::memcpy(to.at(first, head), from.at(first, head), bytes);
            }
        }
    }
    if (stream) stream->synchronize();
    return true;
}

int64_t KvCache::attach_cached_prefix(std::span<const int32_t> tokens) {
    if (length_ != 0 || !table_.empty()) fail("KV cache: a cached prefix goes into an empty cache");
    const int64_t block_size = pool_->block_size();
    // The last token is always computed: its logits are the point.
    const int64_t most = std::min<int64_t>(int64_t(tokens.size()) - 1, max_positions_) / block_size;
    BlockHash parent = pool_->root_hash();
    for (int64_t i = 0; i < most; ++i) {
        const auto key = tokens.subspan(size_t(i * block_size), size_t(block_size));
        const int32_t block = pool_->lookup(parent, key);
        if (block < 0) break;
        table_.push_back(block);
        parent = hash_block(parent, key);
        hashes_.push_back(parent);
    }
    length_ = int64_t(table_.size()) * block_size;
    return length_;
}

void KvCache::publish(std::span<const int32_t> tokens) {
    if (epoch_ != pool_->epoch()) return;
    if (int64_t(tokens.size()) < length_)
        fail("KV cache: ", tokens.size(), " token ids for ", length_, " cached positions");
    const int64_t block_size = pool_->block_size();
    const auto full = size_t(length_ / block_size);
    BlockHash parent = hashes_.empty() ? pool_->root_hash() : hashes_.back();
    while (hashes_.size() < full) {
        const auto key = tokens.subspan(hashes_.size() * size_t(block_size), size_t(block_size));
        pool_->publish(table_[hashes_.size()], parent, key);
        parent = hash_block(parent, key);
        hashes_.push_back(parent);
    }
}

size_t KvCache::bytes() const {
    return size_t(blocks()) * KvBlockPool::bytes_per_block(shape(), pool_->block_size());
}

void write_rows(const KvRows& rows, int64_t start, const float* src, int64_t n) {
    const int64_t dim = rows.head_dim;
    const cpu::VecDotKernels& convert = cpu::vec_dot_kernels();
    for (int64_t i = 0; i < n; ++i) {
        for (int64_t head = 0; head < rows.n_heads; ++head) {
            const float* from = src + (i * rows.n_heads + head) * dim;
            void* to = rows.at(start + i, head);
            switch (rows.dtype) {
                case DType::F16: convert.f32_to_f16(from, static_cast<uint16_t*>(to), dim); break;
                case DType::BF16: convert.f32_to_bf16(from, static_cast<uint16_t*>(to), dim); break;
                default: std::memcpy(to, from, size_t(dim) * sizeof(float));
            }
        }
    }
}

}  // namespace tandem

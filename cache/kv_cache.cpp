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
    return int64_t(free_.size());
}

int32_t KvBlockPool::allocate() {
    std::lock_guard lock(mutex_);
    if (free_.empty()) return -1;
    const int32_t block = free_.back();
    free_.pop_back();
    return block;
}

void KvBlockPool::release(int32_t block) {
    std::lock_guard lock(mutex_);
    free_.push_back(block);
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
    : pool_(std::move(pool)), max_positions_(max_positions) {
    if (max_positions <= 0) fail("KV cache: max_positions must be positive, got ", max_positions);
}

KvCache::~KvCache() {
    for (int32_t block : table_)
        pool_->release(block);
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

void KvCache::truncate(int64_t length) {
    if (length < 0 || length > length_) fail("KV cache: cannot truncate ", length_, " to ", length);
    length_ = length;
}

void KvCache::copy_prefix_from(const KvCache& other, int64_t n) {
    if (length_ != 0 || n > other.length_ || shape().n_layers != other.shape().n_layers ||
        shape().dtype != other.shape().dtype || shape().device != other.shape().device)
        fail("KV cache: cannot copy ", n, " positions of a cache holding ", other.length_,
             " into one holding ", length_);
    if (!reserve(n)) fail("KV cache: no free blocks to copy ", n, " positions into");
    // Whole blocks in one copy each; in the last, partly filled block each head's first
    // positions are one run (a block is [n_heads, block_size, dim]). Device blocks are copied on
    // a stream of their device, so the same code serves a cache on the GPU.
    const std::unique_ptr<Stream> stream =
        shape().device.is_cpu() ? nullptr : make_stream(shape().device);
    auto copy = [&](void* to, const void* from, size_t bytes) {
        if (stream)
            stream->copy_async(to, from, bytes, CopyDirection::DeviceToDevice);
        else
            std::memcpy(to, from, bytes);
    };
    const int64_t block_size = pool_->block_size();
    for (int layer = 0; layer < shape().n_layers; ++layer) {
        for (const auto& [from, to] : {std::pair{other.keys(layer), keys(layer)},
                                       std::pair{other.values(layer), values(layer)}}) {
            if (from.empty()) continue;
            const auto row_bytes = size_t(from.head_dim * from.element_bytes());
            for (int64_t first = 0; first < n; first += block_size) {
                const int64_t count = std::min(block_size, n - first);
                if (count == block_size) {
                    copy(to.at(first, 0), from.at(first, 0),
                         size_t(from.n_heads * block_size) * row_bytes);
                    continue;
                }
                for (int64_t head = 0; head < from.n_heads; ++head)
                    copy(to.at(first, head), from.at(first, head), size_t(count) * row_bytes);
            }
        }
    }
    if (stream) stream->synchronize();
    length_ = n;
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

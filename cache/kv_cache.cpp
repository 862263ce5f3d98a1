#include "cache/kv_cache.h"

#include "kernels/error.h"

namespace tandem {

KvCache::KvCache(const KvCacheShape& shape) : shape_(shape) {
    if (shape.n_layers <= 0 || shape.n_kv_heads <= 0 || shape.head_dim <= 0 ||
        shape.v_head_dim < 0 || shape.capacity <= 0)
        fail("KV cache: every dimension must be positive (layers ", shape.n_layers, ", kv heads ",
             shape.n_kv_heads, ", head_dim ", shape.head_dim, ", v_head_dim ", shape.v_head_dim,
             " (0: keys only), capacity ", shape.capacity, ")");
    keys_.reserve(size_t(shape.n_layers));
    values_.reserve(size_t(shape.n_layers));
    for (int layer = 0; layer < shape.n_layers; ++layer) {
        keys_.push_back(
            make_tensor(DType::F32, {shape.capacity, shape.n_kv_heads, shape.head_dim}));
        if (shape.v_head_dim > 0)
            values_.push_back(
                make_tensor(DType::F32, {shape.capacity, shape.n_kv_heads, shape.v_head_dim}));
    }
}

Tensor KvCache::keys(int layer) const {
    return keys_.at(size_t(layer)).view;
}
Tensor KvCache::values(int layer) const {
    if (shape_.v_head_dim == 0) return Tensor();
    return values_.at(size_t(layer)).view;
}

void KvCache::commit(int64_t n) {
    if (n < 0 || length_ + n > shape_.capacity)
        fail("KV cache: ", length_, " + ", n, " positions exceed the capacity of ",
             shape_.capacity);
    length_ += n;
}

void KvCache::truncate(int64_t length) {
    if (length < 0 || length > length_) fail("KV cache: cannot truncate ", length_, " to ", length);
    length_ = length;
}

size_t KvCache::bytes() const {
    size_t total = 0;
    for (const OwnedTensor& t : keys_)
        total += t.buffer.bytes();
    for (const OwnedTensor& t : values_)
        total += t.buffer.bytes();
    return total;
}

}  // namespace tandem

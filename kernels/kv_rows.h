// KvRows: one layer's keys (or values) of one sequence, n_heads x head_dim elements per position,
// stored in fixed-size blocks that need not be adjacent in memory (a paged KV cache). Position p
// lives in block block_table[p / block_size] at offset p % block_size.
//
// Layout: within a block the positions of one head are adjacent ([n_heads, block_size,
// head_dim]), because attention reads one KV head at a time and a run of block_size x head_dim
// elements streams from memory several times faster than head_dim elements every row (measured
// on the dev VM: 9 vs 3.5 GB/s). A contiguous [capacity, n_heads, head_dim] tensor is the other
// layout the strides allow, one block covering everything: what the converting constructor builds
// (kernel tests and one-off caches use it).
//
// Elements are f32, f16 or bf16 (`dtype`): writers convert into it (write_rows in
// cache/kv_cache.h) and the attention kernels read the stored type.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/dtype.h"
#include "kernels/tensor.h"

namespace tandem {

struct KvRows {
    std::byte* base = nullptr;             // block 0
    const int32_t* block_table = nullptr;  // block of each group of block_size positions
    int64_t block_size = 0;                // positions per block
    int64_t n_heads = 0;
    int64_t head_dim = 0;
    int64_t capacity = 0;  // positions the block table covers
    DType dtype = DType::F32;
    // In elements: head h of position p starts at block * block_stride + (p % block_size) *
    // pos_stride + h * head_stride.
    int64_t pos_stride = 0, head_stride = 0, block_stride = 0;

    KvRows() = default;
    // Blocks of a KV block pool, [n_heads, block_size, head_dim] each.
    KvRows(void* first_block, const int32_t* table, int64_t positions_per_block, int64_t heads,
           int64_t dim, int64_t positions, DType type = DType::F32);
    // A contiguous f32, f16 or bf16 [capacity, n_heads, head_dim] tensor as a single block.
    KvRows(const Tensor& contiguous);  // NOLINT(google-explicit-constructor): see above

    bool empty() const { return base == nullptr; }
    int64_t element_bytes() const { return dtype == DType::F32 ? 4 : 2; }
    // The head_dim elements of head `head` at position `pos`.
    std::byte* at(int64_t pos, int64_t head) const {
        const int64_t block = block_table[pos / block_size];
        return base + (block * block_stride + pos % block_size * pos_stride + head * head_stride) *
                          element_bytes();
    }
};

// The element types a KV cache may store: f32, f16, bf16.
bool is_kv_cache_type(DType dtype);

}  // namespace tandem

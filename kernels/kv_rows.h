// KvRows: one layer's keys (or values) of one sequence, a row of n_heads x head_dim floats per
// position, stored in fixed-size blocks that need not be adjacent in memory (a paged KV cache).
// Position p lives in block block_table[p / block_size] at offset p % block_size. A contiguous
// [capacity, n_heads, head_dim] tensor is the special case of one block covering everything,
// which is what the converting constructor builds (kernel tests and one-off caches use it).
#pragma once

#include <cstdint>

#include "kernels/tensor.h"

namespace tandem {

struct KvRows {
    float* base = nullptr;                 // block 0; block b starts b * block_size rows later
    const int32_t* block_table = nullptr;  // block of each group of block_size positions
    int64_t block_size = 0;                // positions per block
    int64_t n_heads = 0;
    int64_t head_dim = 0;
    int64_t capacity = 0;  // positions the block table covers

    KvRows() = default;
    KvRows(float* first_block, const int32_t* table, int64_t positions_per_block, int64_t heads,
           int64_t dim, int64_t positions)
        : base(first_block),
          block_table(table),
          block_size(positions_per_block),
          n_heads(heads),
          head_dim(dim),
          capacity(positions) {}
    // A contiguous f32 [capacity, n_heads, head_dim] tensor as a single block.
    KvRows(const Tensor& contiguous);  // NOLINT(google-explicit-constructor): see above

    bool empty() const { return base == nullptr; }
    int64_t row_floats() const { return n_heads * head_dim; }
    float* row(int64_t pos) const {
        const int64_t block = block_table[pos / block_size];
        return base + (block * block_size + pos % block_size) * row_floats();
    }
};

}  // namespace tandem

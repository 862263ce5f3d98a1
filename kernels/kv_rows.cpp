#include "kernels/kv_rows.h"

#include "kernels/error.h"

namespace tandem {

namespace {
const int32_t kSingleBlock = 0;

void check_type(DType type) {
    if (!is_kv_cache_type(type))
        fail("KV rows: ", dtype_name(type), " is not a KV cache type (f32, f16 or bf16)");
}
}  // namespace

bool is_kv_cache_type(DType dtype) {
    return dtype == DType::F32 || dtype == DType::F16 || dtype == DType::BF16;
}

KvRows::KvRows(void* first_block, const int32_t* table, int64_t positions_per_block, int64_t heads,
               int64_t dim, int64_t positions, DType type)
    : base(static_cast<std::byte*>(first_block)),
      block_table(table),
      block_size(positions_per_block),
      n_heads(heads),
      head_dim(dim),
      capacity(positions),
      dtype(type),
      pos_stride(dim),
      head_stride(positions_per_block * dim),
      block_stride(heads * positions_per_block * dim) {
    check_type(type);
}

KvRows::KvRows(const Tensor& t) {
    if (t.empty()) return;
    if (t.rank() != 3 || !is_kv_cache_type(t.dtype()) || !t.is_contiguous())
        fail("KV rows: expected a contiguous rank-3 f32, f16 or bf16 tensor, got ", t.describe());
    base = static_cast<std::byte*>(t.data());
    block_table = &kSingleBlock;
    block_size = capacity = t.dim(0);
    n_heads = t.dim(1);
    head_dim = t.dim(2);
    dtype = t.dtype();
    pos_stride = n_heads * head_dim;
    head_stride = head_dim;
    block_stride = capacity * pos_stride;
}

}  // namespace tandem

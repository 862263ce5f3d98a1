#include "kernels/kv_rows.h"

#include "kernels/error.h"

namespace tandem {

namespace {
const int32_t kSingleBlock = 0;
}

KvRows::KvRows(const Tensor& t) {
    if (t.empty()) return;
    if (t.rank() != 3 || t.dtype() != DType::F32 || !t.is_contiguous())
        fail("KV rows: expected a contiguous rank-3 f32 tensor, got ", t.describe());
    base = t.data_as<float>();
    block_table = &kSingleBlock;
    block_size = capacity = t.dim(0);
    n_heads = t.dim(1);
    head_dim = t.dim(2);
}

}  // namespace tandem

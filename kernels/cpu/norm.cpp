#include "kernels/cpu/norm.h"

#include <cmath>
#include <vector>

#include "kernels/cpu/linear.h"
#include "kernels/error.h"

namespace tandem::cpu {

void rms_norm(const Tensor& x, const Tensor& weight, float eps, const Tensor& out,
              ThreadPool& pool) {
    if (x.rank() != 2 || x.dtype() != DType::F32 || !x.is_contiguous())
        fail("rms_norm: x must be a contiguous [n_rows, dim] f32 tensor, got ", x.describe());
    if (!(out.shape() == x.shape()) || out.dtype() != DType::F32)
        fail("rms_norm: out must be ", x.shape().str(), " f32, got ", out.describe());
    const int64_t n_rows = x.dim(0), dim = x.dim(1);
    if (weight.numel() != dim || !is_float_weight_type(weight.dtype()))
        fail("rms_norm: weight must have ", dim, " elements, got ", weight.describe());
    std::vector<float> w(static_cast<size_t>(dim));
    row_to_f32(weight.data(), weight.dtype(), dim, w.data());
    const float* in = x.data_as<const float>();
    float* dst = out.data_as<float>();
    pool.parallel_for(n_rows, 8, [&](int64_t begin, int64_t end) {
        for (int64_t r = begin; r < end; ++r) {
            const float* row = in + r * dim;
            const float mean_square = dot_f32(row, row, dim) / float(dim);
            const float scale = 1.0f / std::sqrt(mean_square + eps);
            float* o = dst + r * dim;
            for (int64_t i = 0; i < dim; ++i)
                o[i] = w[size_t(i)] * (row[i] * scale);
        }
    });
}

}  // namespace tandem::cpu

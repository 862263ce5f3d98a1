#include "kernels/cpu/linear.h"

#include <vector>

#include "kernels/cpu/isa.h"
#include "kernels/error.h"

namespace tandem::cpu {

namespace {

// Output rows handed to one task: enough work to amortise scheduling, small enough to balance
// across cores for the narrow matrices of small models.
constexpr int64_t kRowsPerTask = 16;
// Up to this many tokens, bf16 rows are widened inside the dot product instead of once into a
// scratch row: cheaper for decode, where each row is used by one or a few tokens.
constexpr int64_t kFusedMaxTokens = 4;

void check_linear_args(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& y) {
    if (x.rank() != 2 || x.dtype() != DType::F32 || !x.is_contiguous())
        fail("linear: x must be a contiguous [n_tokens, k] f32 tensor, got ", x.describe());
    if (w.rank() != 2 || !is_float_weight_type(w.dtype()) || !w.is_contiguous())
        fail("linear: w must be a contiguous [m, k] float tensor, got ", w.describe());
    if (w.dim(1) != x.dim(1))
        fail("linear: x ", x.describe(), " and w ", w.describe(), " disagree on k");
    if (y.rank() != 2 || y.dtype() != DType::F32 || y.dim(0) != x.dim(0) || y.dim(1) != w.dim(0) ||
        !y.is_contiguous())
        fail("linear: y must be [", x.dim(0), ", ", w.dim(0), "] f32, got ", y.describe());
    if (!bias.empty() && (bias.numel() != w.dim(0) || !is_float_weight_type(bias.dtype())))
        fail("linear: bias must have ", w.dim(0), " elements, got ", bias.describe());
}

}  // namespace

TANDEM_MULTIVERSION void row_to_f32(const void* row, DType dtype, int64_t n, float* out) {
    switch (dtype) {
        case DType::F32: {
            const float* in = static_cast<const float*>(row);
            for (int64_t i = 0; i < n; ++i)
                out[i] = in[i];
            return;
        }
        case DType::BF16: {
            const uint16_t* in = static_cast<const uint16_t*>(row);
#pragma omp simd
            for (int64_t i = 0; i < n; ++i)
                out[i] = bf16_to_f32(in[i]);
            return;
        }
        case DType::F16: {
            const uint16_t* in = static_cast<const uint16_t*>(row);
            for (int64_t i = 0; i < n; ++i)
                out[i] = f16_to_f32(in[i]);
            return;
        }
        default:
            fail("row_to_f32: unsupported dtype ", dtype_name(dtype));
    }
}

TANDEM_MULTIVERSION float dot_f32(const float* a, const float* b, int64_t n) {
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int64_t i = 0; i < n; ++i)
        sum += a[i] * b[i];
    return sum;
}

TANDEM_MULTIVERSION float dot_bf16_f32(const uint16_t* w, const float* x, int64_t n) {
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int64_t i = 0; i < n; ++i)
        sum += bf16_to_f32(w[i]) * x[i];
    return sum;
}

void linear(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& y,
            ThreadPool& pool) {
    check_linear_args(x, w, bias, y);
    const int64_t n_tokens = x.dim(0), m = w.dim(0), k = w.dim(1);
    if (n_tokens == 0) return;
    std::vector<float> bias_f32;
    if (!bias.empty()) {
        bias_f32.resize(size_t(m));
        row_to_f32(bias.data(), bias.dtype(), m, bias_f32.data());
    }
    const float* xs = x.data_as<const float>();
    float* ys = y.data_as<float>();
    const auto* w_bytes = static_cast<const std::byte*>(w.data());
    const int64_t w_row_bytes = row_bytes(w.dtype(), k);
    const int64_t n_tasks = (m + kRowsPerTask - 1) / kRowsPerTask;
    pool.run(n_tasks, [&](int64_t task) {
        thread_local std::vector<float> scratch;
        if (scratch.size() < size_t(k)) scratch.resize(size_t(k));
        const int64_t row_end = std::min(m, (task + 1) * kRowsPerTask);
        for (int64_t row = task * kRowsPerTask; row < row_end; ++row) {
            const void* w_row = w_bytes + row * w_row_bytes;
            const float b = bias_f32.empty() ? 0.0f : bias_f32[size_t(row)];
            if (w.dtype() == DType::BF16 && n_tokens <= kFusedMaxTokens) {
                // Few tokens: widen bf16 inside the dot product, the row stays in L1 between
                // tokens.
                for (int64_t t = 0; t < n_tokens; ++t)
                    ys[t * m + row] =
                        dot_bf16_f32(static_cast<const uint16_t*>(w_row), xs + t * k, k) + b;
                continue;
            }
            const float* wf = static_cast<const float*>(w_row);
            if (w.dtype() != DType::F32) {
                row_to_f32(w_row, w.dtype(), k, scratch.data());
                wf = scratch.data();
            }
            for (int64_t t = 0; t < n_tokens; ++t)
                ys[t * m + row] = dot_f32(xs + t * k, wf, k) + b;
        }
    });
}

}  // namespace tandem::cpu

#include "kernels/cpu/linear.h"

#include <algorithm>
#include <vector>

#include "kernels/cpu/quant.h"
#include "kernels/cpu/tile_gemm.h"
#include "kernels/cpu/vec_dot.h"
#include "kernels/error.h"

namespace tandem::cpu {

namespace {

// Output rows handed to one task: enough work to amortise scheduling, small enough to balance
// across cores for the narrow matrices of small models.
constexpr int64_t kRowsPerTask = 16;

void check_linear_args(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& y) {
    if (x.rank() != 2 || x.dtype() != DType::F32 || !x.is_contiguous())
        fail("linear: x must be a contiguous [n_tokens, k] f32 tensor, got ", x.describe());
    if (w.rank() != 2 || !is_weight_type(w.dtype()) || !w.is_contiguous())
        fail("linear: w must be a contiguous [m, k] weight tensor, got ", w.describe());
    if (w.dim(1) != x.dim(1))
        fail("linear: x ", x.describe(), " and w ", w.describe(), " disagree on k");
    if (w.dim(1) % dtype_block_size(w.dtype()) != 0)
        fail("linear: k = ", w.dim(1), " is not a multiple of the ", dtype_name(w.dtype()),
             " block");
    if (y.rank() != 2 || y.dtype() != DType::F32 || y.dim(0) != x.dim(0) || y.dim(1) != w.dim(0) ||
        !y.is_contiguous())
        fail("linear: y must be [", x.dim(0), ", ", w.dim(0), "] f32, got ", y.describe());
    if (!bias.empty() && (bias.numel() != w.dim(0) || !is_float_weight_type(bias.dtype())))
        fail("linear: bias must have ", w.dim(0), " elements, got ", bias.describe());
}

// The large-M path (tile_gemm.h): x once in the tile type, then one task per tile of weight rows.
// Tiles shrink (to 16 rows) when the matrix is too narrow for four tasks per thread.
void linear_tiled(const Tensor& x, const Tensor& w, std::span<const float> bias, const Tensor& y,
                  ThreadPool& pool) {
    const int64_t n_tokens = x.dim(0), m = w.dim(0), k = w.dim(1);
    // f32 activations are used in place; bf16 or int8 ones (the avx2 level) converted once.
    const DType act_type = tile_gemm_activation_type(w.dtype());
    const int64_t act_row_bytes = row_bytes(act_type, k);
    std::vector<std::byte> converted(act_type != DType::F32 ? size_t(n_tokens * act_row_bytes) : 0);
    const void* acts = x.data();
    if (act_type != DType::F32) {
        pool.parallel_for(n_tokens, 1, [&](int64_t begin, int64_t end) {
            for (int64_t t = begin; t < end; ++t)
                to_tile_activations(x.data_as<const float>() + t * k, act_type,
                                    converted.data() + t * act_row_bytes, k);
        });
        acts = converted.data();
    }
    const int64_t balanced = (m + 4 * pool.size() - 1) / (4 * pool.size());
    const int64_t step =
        std::min(tile_gemm_rows(w.dtype(), k), std::max<int64_t>(16, (balanced + 15) / 16 * 16));
    const auto* w_bytes = static_cast<const std::byte*>(w.data());
    const int64_t w_row_bytes = row_bytes(w.dtype(), k);
    float* ys = y.data_as<float>();
    pool.run((m + step - 1) / step, [&](int64_t task) {
        const int64_t begin = task * step, n = std::min(m, begin + step) - begin;
        thread_local std::vector<float> tile;
        tile.resize(size_t(n_tokens * n));
        tile_gemm(acts, n_tokens, w_bytes + begin * w_row_bytes, w.dtype(), n, k, tile.data());
        for (int64_t t = 0; t < n_tokens; ++t)
            for (int64_t j = 0; j < n; ++j)
                ys[t * m + begin + j] =
                    tile[size_t(t * n + j)] + (bias.empty() ? 0.0f : bias[size_t(begin + j)]);
    });
}

}  // namespace

void row_to_f32(const void* row, DType dtype, int64_t n, float* out) {
    switch (dtype) {
        case DType::F32: {
            const float* in = static_cast<const float*>(row);
            for (int64_t i = 0; i < n; ++i)
                out[i] = in[i];
            return;
        }
        case DType::BF16:
            vec_dot_kernels().bf16_to_f32(static_cast<const uint16_t*>(row), out, n);
            return;
        case DType::F16: {
            const uint16_t* in = static_cast<const uint16_t*>(row);
            for (int64_t i = 0; i < n; ++i)
                out[i] = f16_to_f32(in[i]);
            return;
        }
        default:
            if (is_quantized_weight_type(dtype)) return dequantize_row(dtype, row, out, n);
            fail("row_to_f32: unsupported dtype ", dtype_name(dtype));
    }
}

float dot_f32(const float* a, const float* b, int64_t n) {
    return vec_dot_kernels().dot_f32(a, b, n);
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
    if (use_tile_gemm(w.dtype(), n_tokens)) return linear_tiled(x, w, bias_f32, y, pool);
    const VecDotKernels& kernels = vec_dot_kernels();
    const RowDotNFn dot = row_dot_n(kernels, w.dtype());

    // Activations in the dot product's format, converted once for all rows.
    const DType act_type = vec_dot_type(w.dtype());
    const int64_t act_row_bytes = row_bytes(act_type, k);
    std::vector<std::byte> converted;
    const std::byte* acts = static_cast<const std::byte*>(x.data());
    if (act_type != DType::F32) {
        converted.resize(size_t(n_tokens * act_row_bytes));
        pool.parallel_for(n_tokens, 1, [&](int64_t begin, int64_t end) {
            for (int64_t t = begin; t < end; ++t)
                quantize_activation(act_type, x.data_as<const float>() + t * k,
                                    converted.data() + t * act_row_bytes, k);
        });
        acts = converted.data();
    }

    float* ys = y.data_as<float>();
    const auto* w_bytes = static_cast<const std::byte*>(w.data());
    const int64_t w_row_bytes = row_bytes(w.dtype(), k);
    const int64_t per_pass = dot_tokens_per_pass();
    if (const RowsDotFn dot_rows = one_token_row_dots(kernels, w.dtype());
        n_tokens == 1 && dot_rows) {
        // One token (decode: the projections and the lm_head) where the ISA has a several-row
        // dot: rows share the token's activation, each a stretch of the task's range apart so
        // every row streams in order. Tasks of up to 256 rows, at least 4 per thread.
        const int64_t step = std::clamp<int64_t>(m / (4 * pool.size()), kRowsPerTask, 256);
        pool.run((m + step - 1) / step, [&](int64_t task) {
            for_each_row_tile(
                task * step, std::min(m, (task + 1) * step), kMaxDotRows,
                [&](const int64_t* row, int n) {
                    const void* w_rows[kMaxDotRows];
                    for (int j = 0; j < n; ++j)
                        w_rows[j] = w_bytes + row[j] * w_row_bytes;
                    float out[kMaxDotRows];
                    dot_rows(w_rows, n, acts, k, out);
                    for (int j = 0; j < n; ++j)
                        ys[row[j]] = out[j] + (bias_f32.empty() ? 0.0f : bias_f32[size_t(row[j])]);
                });
        });
        return;
    }
    pool.run((m + kRowsPerTask - 1) / kRowsPerTask, [&](int64_t task) {
        const int64_t row_end = std::min(m, (task + 1) * kRowsPerTask);
        for (int64_t row = task * kRowsPerTask; row < row_end; ++row) {
            const void* w_row = w_bytes + row * w_row_bytes;
            const float b = bias_f32.empty() ? 0.0f : bias_f32[size_t(row)];
            // Up to kMaxDotTokens tokens per pass over the row.
            for (int64_t t0 = 0; t0 < n_tokens; t0 += per_pass) {
                const int n = int(std::min<int64_t>(per_pass, n_tokens - t0));
                const void* rows[kMaxDotTokens];
                float out[kMaxDotTokens];
                for (int j = 0; j < n; ++j)
                    rows[j] = acts + (t0 + j) * act_row_bytes;
                dot(w_row, rows, n, k, out);
                for (int j = 0; j < n; ++j)
                    ys[(t0 + j) * m + row] = out[j] + b;
            }
        }
    });
}

}  // namespace tandem::cpu

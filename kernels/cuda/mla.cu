// The MLA step ops (mla.h): two copy kernels and two batched cuBLAS products.
#include "kernels/cuda/mla.h"

#include <cublas_v2.h>

#include <algorithm>
#include <initializer_list>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/mla_math.h"
#include "kernels/cuda/tensor_checks.h"

namespace tandem::cuda {

namespace {

constexpr int kThreads = 256;

void check_cublas(cublasStatus_t status, const char* statement) {
    if (status != CUBLAS_STATUS_SUCCESS)
        fail(statement, ": ", cublasGetStatusName(status), " (", cublasGetStatusString(status),
             ")");
}

unsigned grid_for(const Context& ctx, int64_t n) {
    return unsigned(std::min<int64_t>(blocks_for(n, kThreads), int64_t(ctx.multiprocessors()) * 8));
}

void require_shape(const Tensor& t, std::initializer_list<int64_t> dims, Device device,
                   const char* op, const char* name) {
    require_f32(t, int(dims.size()), device, op, name);
    int axis = 0;
    for (const int64_t d : dims)
        if (t.dim(axis++) != d) fail(op, ": ", name, " is ", t.describe());
}

// One thread per element of the rotary parts of q_abs and rows, and of latent.
__global__ void split_kernel(MlaShape s, int64_t n, const float* q, const float* kv, float* q_abs,
                             float* rows, float* latent) {
    const int64_t d = s.nope + s.rope, row = s.rope + s.latent;
    const int64_t per_token = s.n_heads * s.rope + s.rope + s.latent;
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n * per_token;
         i += int64_t(gridDim.x) * blockDim.x) {
        const int64_t t = i / per_token, e = i % per_token;
        const float* kv_t = kv + t * (s.latent + s.rope);
        if (e < s.n_heads * s.rope) {
            const int64_t h = e / s.rope, j = e % s.rope;
            q_abs[(t * s.n_heads + h) * row + j] =
                q[(t * s.n_heads + h) * d + s.nope + mla_rope_source(j, s.rope, s.interleaved)];
        } else if (e < s.n_heads * s.rope + s.rope) {
            const int64_t j = e - s.n_heads * s.rope;
            rows[t * row + j] = kv_t[s.latent + mla_rope_source(j, s.rope, s.interleaved)];
        } else {
            const int64_t j = e - s.n_heads * s.rope - s.rope;
            latent[t * s.latent + j] = kv_t[j];
        }
    }
}

__global__ void latent_into_rows_kernel(MlaShape s, int64_t n, const float* latent, float* rows) {
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n * s.latent;
         i += int64_t(gridDim.x) * blockDim.x)
        rows[i / s.latent * (s.rope + s.latent) + s.rope + i % s.latent] = latent[i];
}

}  // namespace

void mla_split(Context& ctx, const MlaShape& s, const Tensor& q, const Tensor& kv,
               const Tensor& q_abs, const Tensor& rows, const Tensor& latent) {
    const Device dev = ctx.device();
    const int64_t n = q.rank() == 2 ? q.dim(0) : 0, row = s.rope + s.latent;
    require_shape(q, {n, s.n_heads * (s.nope + s.rope)}, dev, "mla_split", "q [n, H * D]");
    require_shape(kv, {n, s.latent + s.rope}, dev, "mla_split", "kv [n, R + P]");
    require_shape(q_abs, {n, s.n_heads, row}, dev, "mla_split", "q_abs [n, H, P + R]");
    require_shape(rows, {n, 1, row}, dev, "mla_split", "rows [n, 1, P + R]");
    require_shape(latent, {n, s.latent}, dev, "mla_split", "latent [n, R]");
    if (n == 0) return;
    const int64_t total = n * (s.n_heads * s.rope + s.rope + s.latent);
    split_kernel<<<grid_for(ctx, total), kThreads, 0, native_stream(ctx.stream())>>>(
        s, n, q.data_as<const float>(), kv.data_as<const float>(), q_abs.data_as<float>(),
        rows.data_as<float>(), latent.data_as<float>());
    TANDEM_CUDA_CHECK_LAUNCH("mla split_kernel");
}

void mla_latent_into_rows(Context& ctx, const MlaShape& s, const Tensor& latent,
                          const Tensor& rows) {
    const Device dev = ctx.device();
    const int64_t n = latent.rank() == 2 ? latent.dim(0) : 0;
    require_shape(latent, {n, s.latent}, dev, "mla_latent_into_rows", "latent [n, R]");
    require_shape(rows, {n, 1, s.rope + s.latent}, dev, "mla_latent_into_rows",
                  "rows [n, 1, P + R]");
    if (n == 0) return;
    latent_into_rows_kernel<<<grid_for(ctx, n * s.latent), kThreads, 0,
                              native_stream(ctx.stream())>>>(s, n, latent.data_as<const float>(),
                                                             rows.data_as<float>());
    TANDEM_CUDA_CHECK_LAUNCH("mla latent_into_rows_kernel");
}

// cuBLAS is column-major: a row-major [a, b] matrix is a column-major b x a one.
void mla_absorb_query(Context& ctx, const MlaShape& s, const Tensor& q, const Tensor& uk,
                      const Tensor& q_abs) {
    const Device dev = ctx.device();
    const int64_t n = q.rank() == 2 ? q.dim(0) : 0, d = s.nope + s.rope, row = s.rope + s.latent;
    require_shape(q, {n, s.n_heads * d}, dev, "mla_absorb_query", "q [n, H * D]");
    require_shape(uk, {s.n_heads, s.latent, s.nope}, dev, "mla_absorb_query", "uk [H, R, nope]");
    require_shape(q_abs, {n, s.n_heads, row}, dev, "mla_absorb_query", "q_abs [n, H, P + R]");
    if (n == 0) return;
    // Per head: C (R x n, ldc H * row) = uk[h]ᵀ-as-stored (nope x R, transposed) · q_nope (nope
    // x n, ldb H * D).
    const float alpha = 1.0f, beta = 0.0f;
    check_cublas(
        cublasSgemmStridedBatched(
            static_cast<cublasHandle_t>(ctx.cublas_handle()), CUBLAS_OP_T, CUBLAS_OP_N,
            int(s.latent), int(n), int(s.nope), &alpha, uk.data_as<const float>(), int(s.nope),
            s.latent * s.nope, q.data_as<const float>(), int(s.n_heads * d), d, &beta,
            q_abs.data_as<float>() + s.rope, int(s.n_heads * row), row, int(s.n_heads)),
        "cublasSgemmStridedBatched (MLA query absorption)");
}

void mla_expand_values(Context& ctx, const MlaShape& s, const Tensor& lat, const Tensor& uv,
                       const Tensor& attn) {
    const Device dev = ctx.device();
    const int64_t n = lat.rank() == 3 ? lat.dim(0) : 0;
    require_shape(lat, {n, s.n_heads, s.latent}, dev, "mla_expand_values", "lat [n, H, R]");
    require_shape(uv, {s.n_heads, s.v, s.latent}, dev, "mla_expand_values", "uv [H, V, R]");
    require_shape(attn, {n, s.n_heads * s.v}, dev, "mla_expand_values", "attn [n, H * V]");
    if (n == 0) return;
    // Per head: C (V x n, ldc H * V) = uv[h] (stored R x V, transposed) · lat (R x n, ldb H * R).
    const float alpha = 1.0f, beta = 0.0f;
    check_cublas(
        cublasSgemmStridedBatched(
            static_cast<cublasHandle_t>(ctx.cublas_handle()), CUBLAS_OP_T, CUBLAS_OP_N, int(s.v),
            int(n), int(s.latent), &alpha, uv.data_as<const float>(), int(s.latent), s.v * s.latent,
            lat.data_as<const float>(), int(s.n_heads * s.latent), s.latent, &beta,
            attn.data_as<float>(), int(s.n_heads * s.v), s.v, int(s.n_heads)),
        "cublasSgemmStridedBatched (MLA value expansion)");
}

}  // namespace tandem::cuda

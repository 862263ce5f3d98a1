#include "kernels/cuda/step_ops.h"

#include <vector>

#include "kernels/cuda/cuda_check.h"

namespace tandem::cuda {

namespace {

constexpr int kThreads = 256;

void check_f32_device(const Tensor& t, const char* what) {
    if (t.dtype() != DType::F32 || t.device().kind != DeviceKind::Cuda || !t.is_contiguous())
        fail(what, ": expected a contiguous f32 tensor in CUDA memory, got ", t.describe(), " on ",
             t.device().name());
}

__global__ void clamp_kernel(float* data, int64_t n, float limit) {
    const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i < n) data[i] = fminf(fmaxf(data[i], -limit), limit);
}

// One block per destination row; the columns are strided by the block.
__global__ void gather_rows_kernel(const float* src, const int64_t* rows, float* dst, int64_t dim) {
    const float* from = src + rows[blockIdx.x] * dim;
    float* to = dst + int64_t(blockIdx.x) * dim;
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x)
        to[i] = from[i];
}

__global__ void add_gated_rows_kernel(float* out, const float* shared, const float* gate,
                                      int64_t dim) {
    const int64_t row = blockIdx.x;
    const float g = gate == nullptr ? 1.0f : 1.0f / (1.0f + __expf(-gate[row]));
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x)
        out[row * dim + i] += g * shared[row * dim + i];
}

cudaStream_t stream_of(Context& ctx) {
    return static_cast<cudaStream_t>(ctx.native_stream());
}

}  // namespace

void zero(Context& ctx, const Tensor& t) {
    if (t.device().kind != DeviceKind::Cuda || !t.is_contiguous())
        fail("cuda::zero: expected a contiguous tensor in CUDA memory, got ", t.describe());
    TANDEM_CUDA_CHECK(cudaMemsetAsync(t.data(), 0, size_t(t.bytes()), stream_of(ctx)));
}

void clamp(Context& ctx, const Tensor& t, float limit) {
    check_f32_device(t, "cuda::clamp");
    const int64_t n = t.numel();
    if (n == 0) return;
    clamp_kernel<<<blocks_for(n, kThreads), kThreads, 0, stream_of(ctx)>>>(t.data_as<float>(), n,
                                                                           limit);
    TANDEM_CUDA_CHECK_LAUNCH("clamp_kernel");
}

void gather_rows(Context& ctx, const Tensor& src, std::span<const int64_t> rows,
                 const Tensor& dst) {
    check_f32_device(src, "cuda::gather_rows: src");
    check_f32_device(dst, "cuda::gather_rows: dst");
    const int64_t dim = src.dim(src.rank() - 1);
    if (dst.numel() != int64_t(rows.size()) * dim)
        fail("cuda::gather_rows: ", rows.size(), " rows of ", dim, " into ", dst.describe());
    const int64_t n_src = src.numel() / dim;
    for (const int64_t r : rows)
        if (r < 0 || r >= n_src) fail("cuda::gather_rows: row ", r, " outside [0, ", n_src, ")");
    if (rows.empty()) return;
    const auto* device_rows = static_cast<const int64_t*>(
        ctx.upload(ScratchSlot::Tables, rows.data(), rows.size_bytes()));
    gather_rows_kernel<<<unsigned(rows.size()), kThreads, 0, stream_of(ctx)>>>(
        src.data_as<const float>(), device_rows, dst.data_as<float>(), dim);
    TANDEM_CUDA_CHECK_LAUNCH("gather_rows_kernel");
}

void add_gated_rows(Context& ctx, const Tensor& out, const Tensor& shared,
                    const Tensor& gate_logits) {
    check_f32_device(out, "cuda::add_gated_rows: out");
    check_f32_device(shared, "cuda::add_gated_rows: shared");
    if (!(out.shape() == shared.shape()) || out.rank() != 2)
        fail("cuda::add_gated_rows: out ", out.describe(), " and shared ", shared.describe(),
             " must be the same [n_tokens, dim]");
    const int64_t n_tokens = out.dim(0), dim = out.dim(1);
    if (!gate_logits.empty()) {
        check_f32_device(gate_logits, "cuda::add_gated_rows: gate_logits");
        if (gate_logits.numel() != n_tokens)
            fail("cuda::add_gated_rows: ", gate_logits.describe(), " gate logits for ", n_tokens,
                 " rows");
    }
    if (n_tokens == 0) return;
    add_gated_rows_kernel<<<unsigned(n_tokens), kThreads, 0, stream_of(ctx)>>>(
        out.data_as<float>(), shared.data_as<const float>(),
        gate_logits.empty() ? nullptr : gate_logits.data_as<const float>(), dim);
    TANDEM_CUDA_CHECK_LAUNCH("add_gated_rows_kernel");
}

}  // namespace tandem::cuda

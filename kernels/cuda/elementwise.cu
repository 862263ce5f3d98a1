// RMSNorm, silu * up, add and embedding rows on the GPU (elementwise.h). One block of 256
// threads per row for the row ops, a grid-stride loop for the elementwise ones; f32 math.
#include "kernels/cuda/elementwise.h"

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/host_device.h"
#include "kernels/cuda/tensor_checks.h"

namespace tandem::cuda {

namespace {

constexpr int kRowThreads = 256;
constexpr int kElementThreads = 256;

// Sum of `value` over the block; every thread gets the total.
__device__ float block_sum(float value) {
    __shared__ float partial[kRowThreads / 32];
    for (int offset = 16; offset > 0; offset /= 2)
        value += __shfl_xor_sync(0xffffffffu, value, offset);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    if (lane == 0) partial[warp] = value;
    __syncthreads();
    float total = 0.0f;
    for (int w = 0; w < kRowThreads / 32; ++w)
        total += partial[w];
    return total;
}

__global__ void rms_norm_kernel(const float* x, const void* weight, FloatKind weight_kind,
                                int64_t dim, float eps, float* out) {
    const float* row = x + int64_t(blockIdx.x) * dim;
    float* dst = out + int64_t(blockIdx.x) * dim;
    float squares = 0.0f;
    for (int64_t i = threadIdx.x; i < dim; i += kRowThreads)
        squares += row[i] * row[i];
    const float mean_square = block_sum(squares) / float(dim);
    const float scale = 1.0f / sqrtf(mean_square + eps);
    // Every thread has read its elements of the row before any writes (block_sum synchronized),
    // so out may alias x.
    for (int64_t i = threadIdx.x; i < dim; i += kRowThreads)
        dst[i] = load_float(weight, weight_kind, i) * (row[i] * scale);
}

__global__ void silu_mul_kernel(const float* gate, const float* up, float* out, int64_t n) {
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
         i += int64_t(gridDim.x) * blockDim.x) {
        const float g = gate[i];
        out[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

__global__ void add_kernel(const float* a, const float* b, float* out, int64_t n) {
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
         i += int64_t(gridDim.x) * blockDim.x)
        out[i] = a[i] + b[i];
}

__global__ void embed_kernel(const void* table, FloatKind kind, const int32_t* tokens,
                             int64_t hidden_dim, float* out) {
    const int64_t row = int64_t(tokens[blockIdx.x]) * hidden_dim;
    float* dst = out + int64_t(blockIdx.x) * hidden_dim;
    for (int64_t i = threadIdx.x; i < hidden_dim; i += kRowThreads)
        dst[i] = load_float(table, kind, row + i);
}

// Enough blocks to fill the device a few times over; the kernels stride over the rest.
unsigned element_blocks(const Context& ctx, int64_t n) {
    const int64_t most = int64_t(ctx.multiprocessors()) * 8;
    return unsigned(std::max<int64_t>(1, std::min<int64_t>(blocks_for(n, kElementThreads), most)));
}

void check_same_f32(Context& ctx, const char* op, const Tensor& a, const char* a_name,
                    const Tensor& b, const char* b_name, const Tensor& out) {
    require_on(a, ctx.device(), op, a_name);
    require_on(b, ctx.device(), op, b_name);
    require_on(out, ctx.device(), op, "out");
    for (const Tensor* t : {&a, &b, &out})
        if (t->dtype() != DType::F32 || !t->is_contiguous() || !(t->shape() == a.shape()))
            fail(op, ": ", a_name, " ", a.describe(), ", ", b_name, " ", b.describe(), " and out ",
                 out.describe(), " must be contiguous f32 of one shape");
}

}  // namespace

void rms_norm(Context& ctx, const Tensor& x, const Tensor& weight, float eps, const Tensor& out) {
    require_f32(x, 2, ctx.device(), "rms_norm", "x [n_rows, dim]");
    require_f32(out, 2, ctx.device(), "rms_norm", "out");
    require_on(weight, ctx.device(), "rms_norm", "weight");
    if (!(out.shape() == x.shape()))
        fail("rms_norm: out ", out.describe(), " must have the shape of x ", x.describe());
    const int64_t n_rows = x.dim(0), dim = x.dim(1);
    if (weight.numel() != dim || !weight.is_contiguous())
        fail("rms_norm: weight must be ", dim, " contiguous elements, got ", weight.describe());
    const FloatKind kind = float_kind(weight.dtype(), "rms_norm", "weight");
    if (n_rows == 0) return;
    if (n_rows > INT32_MAX) fail("rms_norm: ", n_rows, " rows exceed one launch");
    rms_norm_kernel<<<unsigned(n_rows), kRowThreads, 0, native_stream(ctx.stream())>>>(
        x.data_as<const float>(), weight.data(), kind, dim, eps, out.data_as<float>());
    TANDEM_CUDA_CHECK_LAUNCH("rms_norm_kernel");
}

void silu_mul(Context& ctx, const Tensor& gate, const Tensor& up, const Tensor& out) {
    check_same_f32(ctx, "silu_mul", gate, "gate", up, "up", out);
    const int64_t n = gate.numel();
    if (n == 0) return;
    silu_mul_kernel<<<element_blocks(ctx, n), kElementThreads, 0, native_stream(ctx.stream())>>>(
        gate.data_as<const float>(), up.data_as<const float>(), out.data_as<float>(), n);
    TANDEM_CUDA_CHECK_LAUNCH("silu_mul_kernel");
}

void add(Context& ctx, const Tensor& a, const Tensor& b, const Tensor& out) {
    check_same_f32(ctx, "add", a, "a", b, "b", out);
    const int64_t n = a.numel();
    if (n == 0) return;
    add_kernel<<<element_blocks(ctx, n), kElementThreads, 0, native_stream(ctx.stream())>>>(
        a.data_as<const float>(), b.data_as<const float>(), out.data_as<float>(), n);
    TANDEM_CUDA_CHECK_LAUNCH("add_kernel");
}

void embed(Context& ctx, const Tensor& table, std::span<const int32_t> tokens, const Tensor& out) {
    require_on(table, ctx.device(), "embed", "table");
    if (table.rank() != 2 || !table.is_contiguous())
        fail("embed: table must be a contiguous [vocab, hidden_dim] tensor, got ",
             table.describe());
    if (table.dtype() != DType::F32 && table.dtype() != DType::F16 && table.dtype() != DType::BF16)
        fail("embed: ", dtype_name(table.dtype()),
             " embedding tables are not supported on CUDA yet (f32, f16 and bf16 are)");
    const FloatKind kind = float_kind(table.dtype(), "embed", "table");
    const int64_t vocab = table.dim(0), hidden_dim = table.dim(1);
    require_f32(out, 2, ctx.device(), "embed", "out");
    if (out.dim(0) != int64_t(tokens.size()) || out.dim(1) != hidden_dim)
        fail("embed: out ", out.describe(), " for ", tokens.size(), " tokens of ", hidden_dim,
             ", expected [", tokens.size(), ", ", hidden_dim, "] f32");
    for (size_t i = 0; i < tokens.size(); ++i)
        if (tokens[i] < 0 || tokens[i] >= vocab)
            fail("embed: token ", tokens[i], " at ", i, " is outside the vocabulary of ", vocab);
    if (tokens.empty()) return;
    const auto* ids = static_cast<const int32_t*>(
        ctx.upload(ScratchSlot::Tables, tokens.data(), tokens.size_bytes()));
    embed_kernel<<<unsigned(tokens.size()), kRowThreads, 0, native_stream(ctx.stream())>>>(
        table.data(), kind, ids, hidden_dim, out.data_as<float>());
    TANDEM_CUDA_CHECK_LAUNCH("embed_kernel");
}

}  // namespace tandem::cuda

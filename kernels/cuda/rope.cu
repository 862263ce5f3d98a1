// apply_rope on the GPU (rope.h): one block per token; its threads first compute the token's
// cos/sin table into shared memory (double arithmetic once per token and frequency, not per
// head), then rotate every pair of every head.
#include "kernels/cuda/rope.h"

#include <cstring>
#include <vector>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/rope_math.h"
#include "kernels/cuda/tensor_checks.h"

namespace tandem::cuda {

namespace {

constexpr int kThreads = 128;

__global__ void rope_kernel(float* x, const double* inv_freq, const int64_t* positions,
                            int64_t n_heads, int64_t head_dim, int64_t half,
                            double attention_scale) {
    extern __shared__ RopeAngle angles[];  // [half]
    const int64_t token = blockIdx.x;
    for (int64_t i = threadIdx.x; i < half; i += kThreads)
        angles[i] = rope_angle(positions[token], inv_freq[i], attention_scale);
    __syncthreads();
    float* rows = x + token * n_heads * head_dim;
    for (int64_t j = threadIdx.x; j < n_heads * half; j += kThreads) {
        const int64_t head = j / half, i = j % half;
        float* v = rows + head * head_dim;
        rope_rotate(v[i], v[i + half], angles[i]);
    }
}

}  // namespace

void apply_rope(Context& ctx, const Tensor& x, std::span<const int64_t> positions,
                std::span<const double> inv_freq, double attention_scale) {
    require_f32(x, 3, ctx.device(), "apply_rope", "x [n_tokens, n_heads, head_dim]");
    const int64_t n_tokens = x.dim(0), n_heads = x.dim(1), head_dim = x.dim(2);
    const int64_t half = int64_t(inv_freq.size());
    if (int64_t(positions.size()) != n_tokens)
        fail("apply_rope: ", positions.size(), " positions for ", n_tokens, " tokens");
    if (2 * half > head_dim) fail("apply_rope: rotary dim ", 2 * half, " > head_dim ", head_dim);
    if (n_tokens == 0 || half == 0 || n_heads == 0) return;
    // One upload: inv_freq, then positions (both 8-byte elements).
    std::vector<std::byte> table((inv_freq.size() + positions.size()) * 8);
    std::memcpy(table.data(), inv_freq.data(), inv_freq.size_bytes());
    std::memcpy(table.data() + inv_freq.size_bytes(), positions.data(), positions.size_bytes());
    auto* device =
        static_cast<std::byte*>(ctx.upload(ScratchSlot::Tables, table.data(), table.size()));
    apply_rope(ctx, x, reinterpret_cast<const int64_t*>(device + inv_freq.size_bytes()),
               reinterpret_cast<const double*>(device), half, attention_scale);
}

void apply_rope(Context& ctx, const Tensor& x, const int64_t* device_positions,
                const double* device_inv_freq, int64_t half, double attention_scale) {
    require_f32(x, 3, ctx.device(), "apply_rope", "x [n_tokens, n_heads, head_dim]");
    const int64_t n_tokens = x.dim(0), n_heads = x.dim(1), head_dim = x.dim(2);
    if (2 * half > head_dim) fail("apply_rope: rotary dim ", 2 * half, " > head_dim ", head_dim);
    if (n_tokens == 0 || half == 0 || n_heads == 0) return;
    if (device_positions == nullptr || device_inv_freq == nullptr)
        fail("apply_rope: no device positions or frequencies");
    const size_t shared = size_t(half) * sizeof(RopeAngle);
    rope_kernel<<<unsigned(n_tokens), kThreads, shared, native_stream(ctx.stream())>>>(
        x.data_as<float>(), device_inv_freq, device_positions, n_heads, head_dim, half,
        attention_scale);
    TANDEM_CUDA_CHECK_LAUNCH("rope_kernel");
}

}  // namespace tandem::cuda

// cuda::linear (linear.h): the GEMV kernel for up to 8 tokens and the dequantize + cuBLAS path
// for more. Layouts: x [n_tokens, k] and y [n_tokens, m] row-major f32; w [m, k] rows of GGUF
// blocks (or plain elements). cuBLAS is column-major, so y is computed as yᵀ [m, n] = w · xᵀ:
// w read as a k x m column-major matrix transposed, x as k x n column-major.
#include "kernels/cuda/linear.h"

#include <cublas_v2.h>
#include <cuda_bf16.h>

#include <cstdint>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/gemv.cuh"
#include "kernels/cuda/weight_dispatch.cuh"

namespace tandem::cuda {

namespace {

void check_cublas(cublasStatus_t status, const char* statement) {
    if (status != CUBLAS_STATUS_SUCCESS)
        fail(statement, ": ", cublasGetStatusName(status), " (", cublasGetStatusString(status),
             ")");
}

bool aligned16(const void* p) {
    return reinterpret_cast<uintptr_t>(p) % 16 == 0;
}

// Float rows are read as 16-byte vectors by the GEMV and dequantization kernels.
bool float_rows_vectorizable(const Tensor& w) {
    return w.dim(1) % kChunk == 0 && aligned16(w.data());
}

__device__ __forceinline__ float bias_at(const void* bias, DType type, int64_t i) {
    if (bias == nullptr) return 0.0f;
    switch (type) {
        case DType::F16: return f16_bits_to_f32(static_cast<const uint16_t*>(bias)[i]);
        case DType::BF16: return bf16_bits_to_f32(static_cast<const uint16_t*>(bias)[i]);
        default: return static_cast<const float*>(bias)[i];
    }
}

struct GemvArgs {
    const uint8_t* w;   // [m, k] of the weight type
    int64_t row_bytes;  // of one weight row
    int64_t k, m;
    const float* x;  // [n_tokens, k]
    int n_tokens;
    const void* bias;  // null or [m]
    DType bias_type;
    float* y;  // [n_tokens, m]
    // Quantized weights only: x as 8-bit blocks (quant_dot.h), written by quantize_q8_kernel.
    const int8_t* xq;  // [n_tokens, k]
    const float* xd;   // [n_tokens, k / 32]
};

constexpr bool is_quantized(DType t) {
    return t != DType::F32 && t != DType::F16 && t != DType::BF16;
}

// x [n_blocks * 32] f32 -> int8 blocks of 32 with an f32 scale each (q8_scale, q8_round), one
// warp per block: the block's largest |x| by a butterfly of fmaxf (exact in any order), then
// each lane rounds its own value. The host twin is quantize_q8_block() (quant_dot.h).
__global__ void __launch_bounds__(kGemvThreads)
    quantize_q8_kernel(const float* x, int64_t n_blocks, int8_t* xq, float* xd) {
    const int64_t b = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / kWarpSize;
    if (b >= n_blocks) return;  // whole warps leave together
    const int lane = int(threadIdx.x) & (kWarpSize - 1);
    const float v = x[b * kQ8Block + lane];
    float amax = fabsf(v);
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2)
        amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, offset));
    const Q8Scale s = q8_scale(amax);
    xq[b * kQ8Block + lane] = q8_round(v, s.inv);
    if (lane == 0) xd[b] = s.d;
}

// kRowsPerWarp consecutive weight rows per warp; kMaxTokens >= n_tokens. Quantized weights
// dot 8-bit activations (a.xq, a.xd) with integer arithmetic; float weights f32 ones (a.x).
template <DType T, int kMaxTokens>
__global__ void __launch_bounds__(kGemvThreads) gemv_kernel(GemvArgs a) {
    const int64_t first =
        (int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarpSize) * kRowsPerWarp;
    if (first >= a.m) return;  // whole warps leave together
    const uint8_t* rows[kRowsPerWarp];
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r)  // past the last row: read row m - 1, write nothing
        rows[r] = a.w + (first + r < a.m ? first + r : a.m - 1) * a.row_bytes;
    float acc[kRowsPerWarp][kMaxTokens] = {};
    if constexpr (is_quantized(T)) {
        const int8_t* xqs[kMaxTokens];
        const float* xds[kMaxTokens];
#pragma unroll
        for (int t = 0; t < kMaxTokens; ++t) {
            const int64_t tt = t < a.n_tokens ? t : 0;
            xqs[t] = a.xq + tt * a.k;
            xds[t] = a.xd + tt * (a.k / kQ8Block);
        }
        lane_rows_dot_q8<T, kMaxTokens, kRowsPerWarp>(rows, a.k / kChunk, xqs, xds, a.n_tokens,
                                                      acc);
    } else {
        const float* xs[kMaxTokens];
#pragma unroll
        for (int t = 0; t < kMaxTokens; ++t)
            xs[t] = a.x + int64_t(t < a.n_tokens ? t : 0) * a.k;
        lane_rows_dot<T, kMaxTokens, kRowsPerWarp>(rows, a.k / kChunk, xs, a.n_tokens, acc);
    }
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) {
        const int64_t row = first + r;
        const float b = row < a.m ? bias_at(a.bias, a.bias_type, row) : 0.0f;
#pragma unroll
        for (int t = 0; t < kMaxTokens; ++t) {
            const float sum = warp_sum(acc[r][t]);
            if ((threadIdx.x & (kWarpSize - 1)) == 0 && t < a.n_tokens && row < a.m)
                a.y[t * a.m + row] = sum + b;
        }
    }
}

// w [m, k] of type T -> bf16 [m, k], one thread per chunk of 8 (written as one 16-byte store).
template <DType T>
__global__ void dequant_bf16_kernel(const uint8_t* w, int64_t row_bytes, int64_t chunks_per_row,
                                    int64_t n_chunks, __nv_bfloat16* out) {
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n_chunks;
         i += int64_t(gridDim.x) * blockDim.x) {
        const int64_t r = i / chunks_per_row, c = i % chunks_per_row;
        float v[kChunk];
        dequant_chunk<T>(w + r * row_bytes, c, v);
        uint4 packed;
        uint32_t* words = reinterpret_cast<uint32_t*>(&packed);
#pragma unroll
        for (int j = 0; j < kChunk / 2; ++j)
            words[j] = uint32_t(f32_to_bf16_bits(v[2 * j])) |
                       uint32_t(f32_to_bf16_bits(v[2 * j + 1])) << 16;
        reinterpret_cast<uint4*>(out)[i] = packed;
    }
}

// Element by element to bf16: activations (f32) and f16 weights whose rows are not 16-byte
// vectors.
template <class In>
__global__ void to_bf16_kernel(const In* in, int64_t n, uint16_t* out) {
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
         i += int64_t(gridDim.x) * blockDim.x) {
        if constexpr (sizeof(In) == 4)
            out[i] = f32_to_bf16_bits(in[i]);
        else
            out[i] = f32_to_bf16_bits(f16_bits_to_f32(in[i]));
    }
}

__global__ void add_bias_kernel(float* y, int64_t n_tokens, int64_t m, const void* bias,
                                DType bias_type) {
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n_tokens * m;
         i += int64_t(gridDim.x) * blockDim.x)
        y[i] += bias_at(bias, bias_type, i % m);
}

// Grid-stride launches: enough blocks to fill the GPU several times, no more.
unsigned stride_blocks(const Context& ctx, int64_t n, int threads) {
    const int64_t cap = int64_t(ctx.multiprocessors()) * 16;
    const int64_t want = (n + threads - 1) / threads;
    return unsigned(want < cap ? (want > 0 ? want : 1) : cap);
}

template <DType T>
void launch_gemv(const GemvArgs& a, cudaStream_t stream) {
    const unsigned blocks = blocks_for(a.m, kWarpsPerBlock * kRowsPerWarp);
    if (a.n_tokens == 1)
        gemv_kernel<T, 1><<<blocks, kGemvThreads, 0, stream>>>(a);
    else if (a.n_tokens == 2)
        gemv_kernel<T, 2><<<blocks, kGemvThreads, 0, stream>>>(a);
    else if (a.n_tokens <= 4)
        gemv_kernel<T, 4><<<blocks, kGemvThreads, 0, stream>>>(a);
    else
        gemv_kernel<T, 8><<<blocks, kGemvThreads, 0, stream>>>(a);
    TANDEM_CUDA_CHECK_LAUNCH("gemv_kernel");
}

void linear_gemm(Context& ctx, const Tensor& x, const Tensor& w, const Tensor& bias,
                 const Tensor& y) {
    const int64_t n = x.dim(0), k = x.dim(1), m = w.dim(0);
    auto stream = static_cast<cudaStream_t>(ctx.native_stream());
    auto handle = static_cast<cublasHandle_t>(ctx.cublas_handle());
    const float alpha = 1.0f, beta = 0.0f;
    constexpr int kThreads = 256;
    if (w.dtype() == DType::F32) {
        check_cublas(cublasSgemm(handle, CUBLAS_OP_T, CUBLAS_OP_N, int(m), int(n), int(k), &alpha,
                                 w.data_as<const float>(), int(k), x.data_as<const float>(), int(k),
                                 &beta, y.data_as<float>(), int(m)),
                     "cublasSgemm");
    } else {
        const void* wb = w.data();
        if (w.dtype() == DType::F16 && !float_rows_vectorizable(w)) {
            auto* out = static_cast<uint16_t*>(ctx.scratch(ScratchSlot::WeightBf16, m * k * 2));
            to_bf16_kernel<<<stride_blocks(ctx, m * k, kThreads), kThreads, 0, stream>>>(
                w.data_as<const uint16_t>(), m * k, out);
            TANDEM_CUDA_CHECK_LAUNCH("to_bf16_kernel (f16 weights)");
            wb = out;
        } else if (w.dtype() != DType::BF16) {
            auto* out =
                static_cast<__nv_bfloat16*>(ctx.scratch(ScratchSlot::WeightBf16, m * k * 2));
            const int64_t chunks = m * k / kChunk;
            with_weight_type(w.dtype(), [&](auto type) {
                constexpr DType T = decltype(type)::value;
                dequant_bf16_kernel<T>
                    <<<stride_blocks(ctx, chunks, kThreads), kThreads, 0, stream>>>(
                        w.data_as<const uint8_t>(), row_bytes(T, k), k / kChunk, chunks, out);
            });
            TANDEM_CUDA_CHECK_LAUNCH("dequant_bf16_kernel");
            wb = out;
        }
        auto* xb = static_cast<uint16_t*>(ctx.scratch(ScratchSlot::ActivationBf16, n * k * 2));
        to_bf16_kernel<<<stride_blocks(ctx, n * k, kThreads), kThreads, 0, stream>>>(
            x.data_as<const float>(), n * k, xb);
        TANDEM_CUDA_CHECK_LAUNCH("to_bf16_kernel (activations)");
        check_cublas(cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, int(m), int(n), int(k), &alpha,
                                  wb, CUDA_R_16BF, int(k), xb, CUDA_R_16BF, int(k), &beta, y.data(),
                                  CUDA_R_32F, int(m), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                     "cublasGemmEx (bf16 x bf16 -> f32)");
    }
    if (!bias.empty()) {
        add_bias_kernel<<<stride_blocks(ctx, n * m, kThreads), kThreads, 0, stream>>>(
            y.data_as<float>(), n, m, bias.data(), bias.dtype());
        TANDEM_CUDA_CHECK_LAUNCH("add_bias_kernel");
    }
}

void check_on_device(const Context& ctx, const Tensor& t, const char* what) {
    if (!(t.device() == ctx.device()))
        fail("cuda::linear: ", what, " ", t.describe(), " is on ", t.device().name(), ", expected ",
             ctx.device().name());
    if (!t.is_contiguous()) fail("cuda::linear: ", what, " ", t.describe(), " is not contiguous");
}

}  // namespace

void launch_quantize_q8(const float* x, int64_t n_blocks, int8_t* xq, float* xd,
                        cudaStream_t stream) {
    quantize_q8_kernel<<<blocks_for(n_blocks, kWarpsPerBlock), kGemvThreads, 0, stream>>>(
        x, n_blocks, xq, xd);
    TANDEM_CUDA_CHECK_LAUNCH("quantize_q8_kernel");
}

void check_weight(const Context& ctx, const Tensor& w, int64_t rows, int64_t k, const char* what) {
    if (w.rank() != 2 || w.dim(0) != rows || w.dim(1) != k || !is_weight_type(w.dtype()))
        fail(what, ": expected [", rows, ", ", k, "] of a weight type, found ", w.describe());
    if (!(w.device() == ctx.device()))
        fail(what, " ", w.describe(), " is on ", w.device().name(), ", expected ",
             ctx.device().name());
    if (!w.is_contiguous()) fail(what, " ", w.describe(), " is not contiguous");
    const int64_t block = dtype_block_size(w.dtype());
    if (k % block != 0)
        fail(what, " ", w.describe(), ": rows of ", k, " are not whole ", dtype_name(w.dtype()),
             " blocks of ", block);
    // Q4_K/Q5_K quants are read 8 bytes at a time; other blocks need their f16 scale aligned;
    // MXFP4's (an e8m0 byte and 16 quant bytes) are read byte by byte.
    const bool k4 = w.dtype() == DType::Q4_K || w.dtype() == DType::Q5_K;
    const uintptr_t need = k4                          ? 16
                           : w.dtype() == DType::F32   ? 4
                           : w.dtype() == DType::MXFP4 ? 1
                                                       : 2;
    if (reinterpret_cast<uintptr_t>(w.data()) % need != 0)
        fail(what, " ", w.describe(), ": data at ", w.data(), " is not ", need, "-byte aligned");
}

bool uses_gemv(const Tensor& w, int64_t n_tokens) {
    if (n_tokens > kGemvMaxTokens) return false;
    return is_quantized_weight_type(w.dtype()) || float_rows_vectorizable(w);
}

void linear(Context& ctx, const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& y) {
    if (x.rank() != 2 || x.dtype() != DType::F32)
        fail("cuda::linear: x must be [n_tokens, k] f32, got ", x.describe());
    const int64_t n = x.dim(0), k = x.dim(1);
    check_on_device(ctx, x, "x");
    if (w.rank() != 2) fail("cuda::linear: w must be [m, k], got ", w.describe());
    const int64_t m = w.dim(0);
    check_weight(ctx, w, m, k, "cuda::linear: w");
    if (y.rank() != 2 || y.dtype() != DType::F32 || y.dim(0) != n || y.dim(1) != m)
        fail("cuda::linear: y must be [", n, ", ", m, "] f32, got ", y.describe());
    check_on_device(ctx, y, "y");
    if (!bias.empty()) {
        if (bias.numel() != m || !is_float_weight_type(bias.dtype()))
            fail("cuda::linear: bias must be [", m, "] f32/f16/bf16, got ", bias.describe());
        check_on_device(ctx, bias, "bias");
    }
    if (n == 0 || m == 0) return;
    if (x.data() == y.data()) fail("cuda::linear: y may not alias x");
    if (n * m > (int64_t(1) << 31) - 1 || m * k > (int64_t(1) << 40))
        fail("cuda::linear: [", n, ", ", k, "] x [", m, ", ", k, "] is too large");

    if (!uses_gemv(w, n) || !aligned16(x.data())) return linear_gemm(ctx, x, w, bias, y);
    GemvArgs args{.w = w.data_as<const uint8_t>(),
                  .row_bytes = row_bytes(w.dtype(), k),
                  .k = k,
                  .m = m,
                  .x = x.data_as<const float>(),
                  .n_tokens = int(n),
                  .bias = bias.empty() ? nullptr : bias.data(),
                  .bias_type = bias.empty() ? DType::F32 : bias.dtype(),
                  .y = y.data_as<float>(),
                  .xq = nullptr,
                  .xd = nullptr};
    auto stream = static_cast<cudaStream_t>(ctx.native_stream());
    if (is_quantized_weight_type(w.dtype())) {
        // k is whole blocks of 32 (every quantized type), so the blocks of all tokens are
        // contiguous; the scales follow the quants, 256-byte aligned.
        const int64_t n_blocks = n * k / kQ8Block;
        const size_t quant_bytes = size_t(n * k + 255) / 256 * 256;
        auto* base = static_cast<uint8_t*>(
            ctx.scratch(ScratchSlot::ActivationQ8, quant_bytes + size_t(n_blocks) * 4));
        auto* xq = reinterpret_cast<int8_t*>(base);
        auto* xd = reinterpret_cast<float*>(base + quant_bytes);
        launch_quantize_q8(args.x, n_blocks, xq, xd, stream);
        args.xq = xq;
        args.xd = xd;
    }
    with_weight_type(w.dtype(),
                     [&](auto type) { launch_gemv<decltype(type)::value>(args, stream); });
}

}  // namespace tandem::cuda

// cuda::linear on a GPU against float64 and cpu::linear, fresh random inputs each run: every
// weight type x n_tokens {1, 2, 7, 8, 33, 256} x shapes that are no multiple of the kernels'
// tiles (m prime: 67, 131, 4099; k several blocks), bias on (f32, bf16) and off, outputs
// poisoned so every element must be written. Skips where no GPU is present.
//
// Tolerances (normalised: max |got - want| / max |want|):
// - GEMV path (n_tokens <= 8), float weights, vs float64 of the exact weight values: the kernel
//   computes in f32 from exactly those values (quant_blocks.h is bit-exact,
//   test_cuda_quant_twins), so only the f32 summation of k products rounds. The host emulation
//   of the kernel's order (emulate_warp_row_dot) stays below 3e-7 on these shapes; 2e-5.
// - GEMV path, quantized weights, vs float64 of the exact weights times the 8-bit activations
//   the kernel dots them with (x quantized on the host by quantize_q8_block, which computes the
//   GPU's bits, test_cuda_quant_twins): the integer sums are exact, only the per-chunk scale
//   products and the f32 sum of k / 8 chunk terms round; the K-quants' min terms cancel against
//   the scale terms, so the terms can exceed the result. 1e-4 (the host emulation,
//   emulate_warp_row_dot_q8, measured up to 2.5e-7 on 67-row matrices of these k, five seeds).
// - cuBLAS path (n_tokens > 8) vs float64 of bf16(w) · bf16(x) (what the tensor cores multiply,
//   exactly, accumulated in f32): 1e-4 (the f32 sum in an order cuBLAS picks); f32 weights
//   (Sgemm) against the exact values, 1e-4.
// - Either path vs float64 of the exact values: the bf16 rounding of x and w (2^-9 relative each)
//   averages out over k; measured on the host up to 3.1e-3; 1.5e-2. The quantized GEMV rounds
//   x to 8 bits per 32-block (half a step, amax / 254, per element) as the CPU does (its Q8_0
//   and Q8_K activations): the host emulation measured up to 1.2e-2 (k 256, 67 rows, five
//   seeds; more rows raise the maximum a little); 2.5e-2.
// - vs cpu::linear, which quantizes x to Q8_0/Q8_K for quantized weights (1/254 relative per
//   element) or rounds to bf16 on its tile path: float64 vs cpu::linear measured up to 1.2e-2
//   on these shapes; 4e-2. The quantized GEMV rounds x independently of the CPU (f32 scales per
//   32 values; the CPU's are f16 per 32 or f32 per 256), so the two errors add: 5e-2.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "kernels/cpu/linear.h"
#include "kernels/cuda/context.h"
#include "kernels/cuda/linear.h"
#include "kernels/error.h"
#include "kernels/thread_pool.h"
#include "tests/gpu/gpu_test_util.h"
#include "tests/test_util.h"

namespace tandem {
namespace {

using test::kGpu;

const DType kTypes[] = {DType::F32,  DType::F16,  DType::BF16, DType::Q8_0, DType::Q4_0,
                        DType::Q5_0, DType::Q4_K, DType::Q5_K, DType::Q6_K, DType::MXFP4};

ThreadPool& pool() {
    static ThreadPool instance({.n_threads = 4, .pin = false});
    return instance;
}

float round_bf16(float v) {
    return bf16_to_f32(f32_to_bf16(v));
}

// float64 of x · wᵀ + bias, with x and w rounded to bf16 first when `bf16_inputs`.
std::vector<double> reference(const std::vector<float>& x, const std::vector<float>& w,
                              const std::vector<float>& bias, int64_t n, int64_t m, int64_t k,
                              bool bf16_inputs) {
    std::vector<double> y(static_cast<size_t>(n * m));
    std::vector<double> xd(x.begin(), x.end()), wd(w.begin(), w.end());
    if (bf16_inputs) {
        for (size_t i = 0; i < x.size(); ++i)
            xd[i] = round_bf16(x[i]);
        for (size_t i = 0; i < w.size(); ++i)
            wd[i] = round_bf16(w[i]);
    }
    for (int64_t t = 0; t < n; ++t)
        for (int64_t r = 0; r < m; ++r) {
            double sum = bias.empty() ? 0.0 : bias[size_t(r)];
            const double* xr = xd.data() + t * k;
            const double* wr = wd.data() + r * k;
            for (int64_t i = 0; i < k; ++i)
                sum += xr[i] * wr[i];
            y[size_t(t * m + r)] = sum;
        }
    return y;
}

struct Case {
    DType type;
    int64_t m, k, n;
    DType bias_type;  // F32, BF16, or I32 for no bias
};

std::string describe(const Case& c) {
    return std::string(dtype_name(c.type)) + " m " + std::to_string(c.m) + " k " +
           std::to_string(c.k) + " n_tokens " + std::to_string(c.n) + " bias " +
           (c.bias_type == DType::I32 ? "none" : std::string(dtype_name(c.bias_type)));
}

void run_case(const Case& c, std::mt19937_64& rng, Stream& stream, cuda::Context& ctx) {
    SCOPED_TRACE(describe(c));
    const test::HostWeights w = test::random_weights(c.type, c.m, c.k, rng);
    const std::vector<float> x = test::random_floats(rng, size_t(c.n * c.k));
    std::vector<float> bias;
    std::vector<uint16_t> bias_bf16;
    if (c.bias_type != DType::I32) {
        bias = test::random_floats(rng, size_t(c.m));
        if (c.bias_type == DType::BF16)
            for (float& b : bias) {
                bias_bf16.push_back(f32_to_bf16(b));
                b = bf16_to_f32(bias_bf16.back());
            }
    }
    const OwnedTensor dw = test::upload(w.bytes, c.type, {c.m, c.k}, stream);
    const OwnedTensor dx = test::upload(x, DType::F32, {c.n, c.k}, stream);
    OwnedTensor dbias;
    if (c.bias_type == DType::F32) dbias = test::upload(bias, DType::F32, {c.m}, stream);
    if (c.bias_type == DType::BF16) dbias = test::upload(bias_bf16, DType::BF16, {c.m}, stream);
    const OwnedTensor dy = test::poisoned(DType::F32, {c.n, c.m}, stream);
    cuda::linear(ctx, *dx, *dw, dbias.view, *dy);
    const std::vector<float> got = test::download<float>(*dy, stream);

    const bool gemv = cuda::uses_gemv(*dw, c.n);
    const bool q8_gemv = gemv && is_quantized_weight_type(c.type);
    const bool bf16_inputs = !gemv && c.type != DType::F32;
    const auto exact = reference(x, w.values, bias, c.n, c.m, c.k, false);
    std::vector<double> own_want = exact;
    if (bf16_inputs) own_want = reference(x, w.values, bias, c.n, c.m, c.k, true);
    if (q8_gemv) own_want = reference(test::q8_rounded(x), w.values, bias, c.n, c.m, c.k, false);
    const test::WorstError own = test::worst_error(got, own_want);
    EXPECT_LT(own.error, q8_gemv ? 1e-4
                         : gemv  ? 2e-5
                                 : 1e-4)
        << (q8_gemv ? "8-bit GEMV"
            : gemv  ? "GEMV"
                    : "cuBLAS")
        << " path: " << own.str(c.m);
    const test::WorstError vs_exact = test::worst_error(got, exact);
    EXPECT_LT(vs_exact.error, q8_gemv ? 2.5e-2 : 1.5e-2)
        << "vs float64 of the exact values: " << vs_exact.str(c.m);

    std::vector<float> cpu_y(size_t(c.n * c.m));
    const Tensor hw(const_cast<uint8_t*>(w.bytes.data()), c.type, {c.m, c.k});
    const Tensor hx(const_cast<float*>(x.data()), DType::F32, {c.n, c.k});
    Tensor hbias;
    if (c.bias_type == DType::F32) hbias = Tensor(bias.data(), DType::F32, {c.m});
    if (c.bias_type == DType::BF16) hbias = Tensor(bias_bf16.data(), DType::BF16, {c.m});
    cpu::linear(hx, hw, hbias, Tensor(cpu_y.data(), DType::F32, {c.n, c.m}), pool());
    const std::vector<double> cpu_d(cpu_y.begin(), cpu_y.end());
    const test::WorstError vs_cpu = test::worst_error(got, cpu_d);
    EXPECT_LT(vs_cpu.error, q8_gemv ? 5e-2 : 4e-2) << "vs cpu::linear: " << vs_cpu.str(c.m);
}

TEST(CudaLinear, EveryWeightTypeAndTokenCountMatchesFloat64AndTheCpu) {
    TANDEM_REQUIRE_GPU();
    TANDEM_SEEDED(seed);
    std::mt19937_64 rng(seed);
    auto stream = make_stream(kGpu);
    cuda::Context ctx(*stream);
    struct Shape2 {
        int64_t m, k;
        DType bias_type;
        bool large_n;  // also n_tokens 256
    };
    const Shape2 shapes[] = {
        {67, 256, DType::F32, true}, {131, 768, DType::I32, true}, {4099, 512, DType::BF16, false}};
    for (DType type : kTypes)
        for (const Shape2& s : shapes)
            for (int64_t n : {1, 2, 7, 8, 33, 256}) {
                if (n == 256 && !s.large_n) continue;
                run_case({.type = type, .m = s.m, .k = s.k, .n = n, .bias_type = s.bias_type}, rng,
                         *stream, ctx);
                if (HasFatalFailure()) return;
            }
}

// Float rows that are no 16-byte vectors (k % 8 != 0) take the cuBLAS path at any n_tokens;
// f16 bias.
TEST(CudaLinear, FloatWeightsWithOddKUseCublasAtAnyTokenCount) {
    TANDEM_REQUIRE_GPU();
    TANDEM_SEEDED(seed);
    std::mt19937_64 rng(seed);
    auto stream = make_stream(kGpu);
    cuda::Context ctx(*stream);
    for (DType type : {DType::F32, DType::F16, DType::BF16})
        for (int64_t n : {1, 33})
            run_case({.type = type, .m = 67, .k = 45, .n = n, .bias_type = DType::F32}, rng,
                     *stream, ctx);
}

// One token against the lm_head-sized shape of a real model: many rows, long k.
TEST(CudaLinear, OneTokenOnALargeMatrix) {
    TANDEM_REQUIRE_GPU();
    TANDEM_SEEDED(seed);
    std::mt19937_64 rng(seed);
    auto stream = make_stream(kGpu);
    cuda::Context ctx(*stream);
    for (DType type : {DType::BF16, DType::Q4_K, DType::Q6_K})
        run_case({.type = type, .m = 8191, .k = 2048, .n = 1, .bias_type = DType::I32}, rng,
                 *stream, ctx);
}

TEST(CudaLinear, BadArgumentsThrowNamingWhatWasExpected) {
    TANDEM_REQUIRE_GPU();
    auto stream = make_stream(kGpu);
    cuda::Context ctx(*stream);
    const OwnedTensor x = make_tensor(DType::F32, {2, 64}, kGpu);
    const OwnedTensor w = make_tensor(DType::Q8_0, {16, 64}, kGpu);
    const OwnedTensor y = make_tensor(DType::F32, {2, 16}, kGpu);
    const OwnedTensor w_bad_k = make_tensor(DType::Q8_0, {16, 32}, kGpu);
    const OwnedTensor y_bad = make_tensor(DType::F32, {2, 15}, kGpu);
    const OwnedTensor x_bf16 = make_tensor(DType::BF16, {2, 64}, kGpu);
    std::vector<float> host(2 * 64);
    const Tensor x_host(host.data(), DType::F32, {2, 64});
    EXPECT_THROW(cuda::linear(ctx, *x, *w_bad_k, Tensor(), *y), Error);
    EXPECT_THROW(cuda::linear(ctx, *x, *w, Tensor(), *y_bad), Error);
    EXPECT_THROW(cuda::linear(ctx, *x_bf16, *w, Tensor(), *y), Error);
    EXPECT_THROW(cuda::linear(ctx, x_host, *w, Tensor(), *y), Error);
    try {
        cuda::linear(ctx, *x, *w, Tensor(), *y_bad);
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("[2, 16]"), std::string::npos) << e.what();
    }
    cuda::linear(ctx, *x, *w, Tensor(), *y);  // the good call still works
    stream->synchronize();
}

}  // namespace
}  // namespace tandem

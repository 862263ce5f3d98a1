// GPU RMSNorm, silu * up, add, embed, RoPE and routing (kernels/cuda/{elementwise,rope,router}.h)
// against the CPU kernels on fresh random inputs, edge shapes included (one row, prime dims,
// dims below and above a block of threads, per-head norms in place). Outputs are poisoned, so
// every element must be written. Skips where no GPU is present.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "kernels/cpu/activation.h"
#include "kernels/cpu/norm.h"
#include "kernels/cpu/rope.h"
#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/rope.h"
#include "kernels/cuda/router.h"
#include "kernels/error.h"
#include "models/blocks/router.h"
#include "tests/gpu/gpu_test_util.h"
#include "tests/test_util.h"

namespace tandem {
namespace {

using test::kGpu;
using test::random_floats;

ThreadPool& pool() {
    static ThreadPool instance({.n_threads = 4, .pin = false});
    return instance;
}

// The host bytes of `values` stored as dtype (f32, f16 or bf16).
std::vector<uint16_t> as_half(const std::vector<float>& values, DType dtype) {
    std::vector<uint16_t> out(values.size());
    for (size_t i = 0; i < values.size(); ++i)
        out[i] = dtype == DType::F16 ? f32_to_f16(values[i]) : f32_to_bf16(values[i]);
    return out;
}

OwnedTensor upload_as(const std::vector<float>& values, DType dtype, Shape shape, Stream& stream) {
    if (dtype == DType::F32) return test::upload(values, dtype, shape, stream);
    return test::upload(as_half(values, dtype), dtype, shape, stream);
}

// The same values on the host, for the CPU kernel.
struct HostTensor {
    std::vector<float> f32;
    std::vector<uint16_t> half;
    Tensor view;
};
HostTensor host_as(const std::vector<float>& values, DType dtype, Shape shape) {
    HostTensor t{.f32 = values, .half = {}, .view = {}};
    if (dtype == DType::F32) {
        t.view = Tensor(t.f32.data(), dtype, shape);
    } else {
        t.half = as_half(values, dtype);
        t.view = Tensor(t.half.data(), dtype, shape);
    }
    return t;
}

void expect_close(const std::vector<float>& got, const std::vector<float>& want, double tol,
                  const std::string& what) {
    const double error = test::max_rel_error(got, want);
    if (error <= tol) return;
    size_t worst = 0;
    for (size_t i = 0; i < got.size(); ++i)
        if (!(std::fabs(got[i] - want[i]) <= std::fabs(got[worst] - want[worst]))) worst = i;
    ADD_FAILURE() << what << ": max rel error " << error << " > " << tol << " at element " << worst
                  << ": got " << got[worst] << ", want " << want[worst];
}

TEST(CudaElementwise, RmsNormMatchesCpu) {
    TANDEM_REQUIRE_GPU();
    TANDEM_SEEDED(seed);
    std::mt19937_64 rng(seed);
    auto stream = make_stream(kGpu);
    cuda::Context ctx(*stream);
    for (const DType wtype : {DType::F32, DType::F16, DType::BF16})
        for (const auto& [n_rows, dim] : {std::pair<int64_t, int64_t>{1, 4096},
                                          {7, 2048},
                                          {3, 4099},
                                          {64 * 8, 128},  // per-head q norm
                                          {5, 1},
                                          {2, 97}}) {
            const std::string what = std::string("weight ") + std::string(dtype_name(wtype)) +
                                     " rows " + std::to_string(n_rows) + " dim " +
                                     std::to_string(dim);
            std::vector<float> x = random_floats(rng, size_t(n_rows * dim), 2.0f);
            const std::vector<float> w = random_floats(rng, size_t(dim));
            HostTensor w_host = host_as(w, wtype, {dim});
            std::vector<float> want(x.size());
            cpu::rms_norm(Tensor(x.data(), DType::F32, {n_rows, dim}), w_host.view, 1e-6f,
                          Tensor(want.data(), DType::F32, {n_rows, dim}), pool());
            OwnedTensor x_dev = test::upload(x, DType::F32, {n_rows, dim}, *stream);
            OwnedTensor w_dev = upload_as(w, wtype, {dim}, *stream);
            OwnedTensor out = test::poisoned(DType::F32, {n_rows, dim}, *stream);
            cuda::rms_norm(ctx, *x_dev, *w_dev, 1e-6f, *out);
            // Sums of squares in another order: ~1e-7 relative; 1e-5 leaves room, not bugs.
            expect_close(test::download<float>(*out, *stream), want, 1e-5, what);
            cuda::rms_norm(ctx, *x_dev, *w_dev, 1e-6f, *x_dev);  // in place
            expect_close(test::download<float>(*x_dev, *stream), want, 1e-5, what + " in place");
        }
}

TEST(CudaElementwise, SiluMulAddAndEmbedMatchCpu) {
    TANDEM_REQUIRE_GPU();
    TANDEM_SEEDED(seed);
    std::mt19937_64 rng(seed);
    auto stream = make_stream(kGpu);
    cuda::Context ctx(*stream);
    for (const int64_t n : {int64_t(1), int64_t(1000003)}) {
        const std::vector<float> gate = random_floats(rng, size_t(n), 4.0f);
        const std::vector<float> up = random_floats(rng, size_t(n));
        std::vector<float> want(static_cast<size_t>(n)), sum(static_cast<size_t>(n));
        cpu::silu_mul(Tensor(const_cast<float*>(gate.data()), DType::F32, {n}),
                      Tensor(const_cast<float*>(up.data()), DType::F32, {n}),
                      Tensor(want.data(), DType::F32, {n}));
        for (size_t i = 0; i < sum.size(); ++i)
            sum[i] = gate[i] + up[i];
        OwnedTensor g = test::upload(gate, DType::F32, {n}, *stream);
        OwnedTensor u = test::upload(up, DType::F32, {n}, *stream);
        OwnedTensor out = test::poisoned(DType::F32, {n}, *stream);
        cuda::silu_mul(ctx, *g, *u, *out);
        // expf on the device is within 2 ulp of the host's.
        expect_close(test::download<float>(*out, *stream), want, 1e-6, "silu_mul");
        cuda::add(ctx, *g, *u, *out);
        expect_close(test::download<float>(*out, *stream), sum, 0.0, "add");
    }
    for (const DType dtype : {DType::F32, DType::F16, DType::BF16}) {
        const int64_t vocab = 1001, hidden = 515;
        const std::vector<float> table = random_floats(rng, size_t(vocab * hidden));
        HostTensor host = host_as(table, dtype, {vocab, hidden});
        OwnedTensor table_dev = upload_as(table, dtype, {vocab, hidden}, *stream);
        const std::vector<int32_t> tokens = {0, 1000, 17, 17, 512};
        const int64_t n = int64_t(tokens.size());
        std::vector<float> want(size_t(n * hidden));
        for (int64_t t = 0; t < n; ++t)
            for (int64_t i = 0; i < hidden; ++i) {
                const size_t at = size_t(tokens[size_t(t)] * hidden + i);
                want[size_t(t * hidden + i)] =
                    dtype == DType::F32 ? table[at]
                                        : (dtype == DType::F16 ? f16_to_f32(host.half[at])
                                                               : bf16_to_f32(host.half[at]));
            }
        OwnedTensor out = test::poisoned(DType::F32, {n, hidden}, *stream);
        cuda::embed(ctx, *table_dev, tokens, *out);
        expect_close(test::download<float>(*out, *stream), want, 0.0,
                     std::string("embed ") + std::string(dtype_name(dtype)));
        const std::vector<int32_t> bad = {1001};
        EXPECT_THROW(cuda::embed(ctx, *table_dev, bad, *out), Error);
    }
}

TEST(CudaRope, MatchesCpuApplyRope) {
    TANDEM_REQUIRE_GPU();
    TANDEM_SEEDED(seed);
    std::mt19937_64 rng(seed);
    auto stream = make_stream(kGpu);
    cuda::Context ctx(*stream);
    for (const auto& [n_tokens, head_dim, rotary_dim] :
         {std::tuple<int64_t, int64_t, int64_t>{1, 128, 128}, {300, 64, 64}, {7, 80, 32}}) {
        const int64_t n_heads = 5, half = rotary_dim / 2;
        std::vector<double> inv_freq(static_cast<size_t>(half));
        for (int64_t i = 0; i < half; ++i)
            inv_freq[size_t(i)] = double(1.0f / std::pow(5e5f, float(2 * i) / float(rotary_dim)));
        std::vector<int64_t> positions(static_cast<size_t>(n_tokens));
        std::uniform_int_distribution<int64_t> position(0, 131071);
        for (auto& p : positions)
            p = position(rng);
        std::vector<float> x = random_floats(rng, size_t(n_tokens * n_heads * head_dim));
        OwnedTensor x_dev = test::upload(x, DType::F32, {n_tokens, n_heads, head_dim}, *stream);
        cpu::apply_rope(Tensor(x.data(), DType::F32, {n_tokens, n_heads, head_dim}), positions,
                        inv_freq, 1.25);
        cuda::apply_rope(ctx, *x_dev, positions, inv_freq, 1.25);
        // Same angle arithmetic (double, rounded once) and unfused products: equal unless the
        // device's double cos/sin round to another float, 1 ulp.
        expect_close(test::download<float>(*x_dev, *stream), x, 1e-6,
                     "rope head_dim " + std::to_string(head_dim) + " rotary " +
                         std::to_string(rotary_dim) + " tokens " + std::to_string(n_tokens));
    }
}

TEST(CudaRouter, MatchesTandemRouteInEveryMode) {
    TANDEM_REQUIRE_GPU();
    TANDEM_SEEDED(seed);
    std::mt19937_64 rng(seed);
    auto stream = make_stream(kGpu);
    cuda::Context ctx(*stream);
    using cuda::RouterScoringKind, cuda::RouterTopkKind;
    const std::vector<cuda::RouterParams> modes = {
        {.n_experts = 64, .k = 8},
        {.n_experts = 60, .k = 4, .normalize = true},
        {.n_experts = 128, .k = 8, .scoring = RouterScoringKind::Sigmoid, .normalize = true},
        {.n_experts = 64,
         .k = 6,
         .topk = RouterTopkKind::GroupLimitedGreedy,
         .n_groups = 8,
         .topk_groups = 3,
         .scaling = 16.0f},
        {.n_experts = 256,
         .k = 8,
         .scoring = RouterScoringKind::Sigmoid,
         .topk = RouterTopkKind::NoauxTc,
         .n_groups = 8,
         .topk_groups = 4,
         .normalize = true,
         .scaling = 2.5f},
    };
    for (const cuda::RouterParams& p : modes)
        for (const bool with_bias : {false, true})
            for (const int64_t n_tokens : {int64_t(1), int64_t(333)}) {
                SCOPED_TRACE("experts " + std::to_string(p.n_experts) + " k " +
                             std::to_string(p.k) + " topk mode " + std::to_string(int(p.topk)) +
                             " bias " + std::to_string(with_bias) + " tokens " +
                             std::to_string(n_tokens));
                std::vector<float> logits = random_floats(rng, size_t(n_tokens * p.n_experts), 2.f);
                const std::vector<float> bias = with_bias
                                                    ? random_floats(rng, size_t(p.n_experts), 0.1f)
                                                    : std::vector<float>{};
                const RouterOptions options{
                    .n_experts_active = p.k,
                    .scoring = p.scoring == RouterScoringKind::Softmax ? RouterScoring::Softmax
                                                                       : RouterScoring::Sigmoid,
                    .topk = p.topk == RouterTopkKind::Greedy ? RouterTopk::Greedy
                            : p.topk == RouterTopkKind::GroupLimitedGreedy
                                ? RouterTopk::GroupLimitedGreedy
                                : RouterTopk::NoauxTc,
                    .n_groups = p.n_groups,
                    .topk_groups = p.topk_groups,
                    .normalize = p.normalize,
                    .scaling = p.scaling};
                const Routing want = route(
                    Tensor(logits.data(), DType::F32, {n_tokens, p.n_experts}), options, bias);
                OwnedTensor logits_dev =
                    test::upload(logits, DType::F32, {n_tokens, p.n_experts}, *stream);
                OwnedTensor bias_dev;
                if (with_bias) bias_dev = test::upload(bias, DType::F32, {p.n_experts}, *stream);
                OwnedTensor ids = test::poisoned(DType::I32, {n_tokens, p.k}, *stream);
                OwnedTensor weights = test::poisoned(DType::F32, {n_tokens, p.k}, *stream);
                cuda::route(ctx, p,
                            {.logits = *logits_dev,
                             .bias = bias_dev.view,
                             .ids = *ids,
                             .weights = *weights});
                const auto got_ids = test::download<int32_t>(*ids, *stream);
                const auto got_weights = test::download<float>(*weights, *stream);
                for (size_t i = 0; i < got_ids.size(); ++i) {
                    ASSERT_EQ(got_ids[i], want.experts[i])
                        << "token " << i / size_t(p.k) << " rank " << i % size_t(p.k);
                    // expf on the device is within 2 ulp of the host's: 1e-6 of the scale.
                    ASSERT_NEAR(got_weights[i], want.weights[i], 1e-6 * p.scaling)
                        << "token " << i / size_t(p.k) << " rank " << i % size_t(p.k);
                }
            }
}

}  // namespace
}  // namespace tandem

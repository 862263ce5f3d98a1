// CPU kernels against float64 references written here from the definitions, on fresh random
// inputs each run, with edge shapes (one token, prime sizes, an expert with no tokens). Outputs
// start filled with NaN so an element the kernel forgot to write fails the comparison.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>

#include "kernels/cpu/attention.h"
#include "kernels/cpu/expert_ffn.h"
#include "kernels/cpu/linear.h"
#include "kernels/cpu/norm.h"
#include "kernels/cpu/rope.h"
#include "kernels/error.h"
#include "tests/test_util.h"

namespace tandem {
namespace {

using test::random_floats;

ThreadPool& pool() {
    static ThreadPool instance({.n_threads = 3, .pin = false});
    return instance;
}

OwnedTensor tensor_from(const std::vector<float>& values, Shape shape, DType dtype = DType::F32) {
    OwnedTensor t = make_tensor(dtype, shape);
    for (size_t i = 0; i < values.size(); ++i) {
        if (dtype == DType::F32) t.view.data_as<float>()[i] = values[i];
        if (dtype == DType::BF16) t.view.data_as<uint16_t>()[i] = f32_to_bf16(values[i]);
        if (dtype == DType::F16) t.view.data_as<uint16_t>()[i] = f32_to_f16(values[i]);
    }
    return t;
}

OwnedTensor nan_tensor(Shape shape) {
    OwnedTensor t = make_tensor(DType::F32, shape);
    std::fill_n(t.view.data_as<float>(), t.view.numel(), std::numeric_limits<float>::quiet_NaN());
    return t;
}

// The value a weight of `dtype` actually holds after rounding.
double stored(float v, DType dtype) {
    if (dtype == DType::BF16) return bf16_to_f32(f32_to_bf16(v));
    if (dtype == DType::F16) return f16_to_f32(f32_to_f16(v));
    return v;
}

void expect_close(const float* got, const std::vector<double>& want, double tol, const char* what) {
    for (size_t i = 0; i < want.size(); ++i)
        ASSERT_NEAR(got[i], want[i], tol * (1.0 + std::fabs(want[i]))) << what << " element " << i;
}

class LinearTest : public ::testing::TestWithParam<DType> {};

TEST_P(LinearTest, MatchesFloat64Reference) {
    const DType dtype = GetParam();
    TANDEM_SEEDED(seed);
    std::mt19937_64 rng(seed);
    for (auto [n, m, k] :
         {std::tuple{1, 1, 1}, {1, 37, 53}, {5, 64, 128}, {13, 31, 97}, {3, 130, 257}}) {
        const auto x = random_floats(rng, size_t(n * k));
        const auto w = random_floats(rng, size_t(m * k));
        const auto b = random_floats(rng, size_t(m));
        OwnedTensor xt = tensor_from(x, {n, k}), wt = tensor_from(w, {m, k}, dtype);
        OwnedTensor bt = tensor_from(b, {m}, dtype), y = nan_tensor({n, m});
        cpu::linear(xt.view, wt.view, bt.view, y.view, pool());
        std::vector<double> want(size_t(n * m));
        for (int t = 0; t < n; ++t)
            for (int r = 0; r < m; ++r) {
                double sum = stored(b[size_t(r)], dtype);
                for (int i = 0; i < k; ++i)
                    sum += double(x[size_t(t * k + i)]) * stored(w[size_t(r * k + i)], dtype);
                want[size_t(t * m + r)] = sum;
            }
        expect_close(y.view.data_as<float>(), want, 1e-5 * std::sqrt(double(k)), "linear");
    }
}

INSTANTIATE_TEST_SUITE_P(WeightTypes, LinearTest,
                         ::testing::Values(DType::F32, DType::BF16, DType::F16),
                         [](const auto& param_info) {
                             return std::string(dtype_name(param_info.param));
                         });

TEST(CpuOps, LinearRejectsMismatchedShapes) {
    OwnedTensor x = make_tensor(DType::F32, {2, 8}), w = make_tensor(DType::F32, {4, 9});
    OwnedTensor y = make_tensor(DType::F32, {2, 4});
    EXPECT_THROW(cpu::linear(x.view, w.view, Tensor(), y.view, pool()), Error);
}

TEST(CpuOps, RmsNormMatchesReference) {
    TANDEM_SEEDED(seed);
    std::mt19937_64 rng(seed);
    const int n = 7, d = 61;
    const auto x = random_floats(rng, n * d, 3.0f), w = random_floats(rng, d);
    OwnedTensor xt = tensor_from(x, {n, d}), wt = tensor_from(w, {d}, DType::BF16),
                out = nan_tensor({n, d});
    cpu::rms_norm(xt.view, wt.view, 1e-5f, out.view, pool());
    std::vector<double> want(n * d);
    for (int r = 0; r < n; ++r) {
        double ms = 0;
        for (int i = 0; i < d; ++i)
            ms += double(x[r * d + i]) * x[r * d + i];
        const double scale = 1.0 / std::sqrt(ms / d + 1e-5);
        for (int i = 0; i < d; ++i)
            want[r * d + i] = x[r * d + i] * scale * stored(w[i], DType::BF16);
    }
    expect_close(out.view.data_as<float>(), want, 1e-5, "rms_norm");
}

TEST(CpuOps, RopeRotatesHalvesByPosition) {
    TANDEM_SEEDED(seed);
    std::mt19937_64 rng(seed);
    const int n = 5, heads = 3, head_dim = 10;
    const auto x = random_floats(rng, n * heads * head_dim);
    OwnedTensor t = tensor_from(x, {n, heads, head_dim});
    const std::vector<int64_t> positions = {0, 1, 7, 100, 4095};
    const std::vector<double> inv_freq = {1.0, 0.1, 0.01, 0.001};  // rotary dim 8 of 10
    cpu::apply_rope(t.view, positions, inv_freq);
    for (int tok = 0; tok < n; ++tok)
        for (int h = 0; h < heads; ++h) {
            const float* in = x.data() + (tok * heads + h) * head_dim;
            const float* out = t.view.data_as<float>() + (tok * heads + h) * head_dim;
            for (int i = 0; i < 4; ++i) {
                const double a = double(positions[tok]) * inv_freq[i];
                ASSERT_NEAR(out[i], in[i] * std::cos(a) - in[i + 4] * std::sin(a), 1e-5);
                ASSERT_NEAR(out[i + 4], in[i + 4] * std::cos(a) + in[i] * std::sin(a), 1e-5);
            }
            EXPECT_EQ(out[8], in[8]);  // past the rotary dim: untouched
            EXPECT_EQ(out[9], in[9]);
        }
}

// Attention itself is tested on every ISA and KV type in test_attention.cpp.
TEST(CpuOps, AttentionRejectsPositionsPastTheCache) {
    OwnedTensor q = make_tensor(DType::F32, {2, 2, 4}), k = make_tensor(DType::F32, {3, 1, 4});
    OwnedTensor v = make_tensor(DType::F32, {3, 1, 4}), out = make_tensor(DType::F32, {2, 2, 4});
    EXPECT_THROW(
        cpu::attention(
            {.q = q.view, .k_cache = k.view, .v_cache = v.view, .out = out.view, .start_pos = 2},
            pool()),
        Error);
}

TEST(CpuOps, MoeExpertsMatchReferenceIncludingIdleAndSkippedExperts) {
    TANDEM_SEEDED(seed);
    std::mt19937_64 rng(seed);
    const int n_tokens = 5, hidden = 24, ffn = 11, n_experts = 4;
    const auto x = random_floats(rng, n_tokens * hidden);
    std::vector<OwnedTensor> storage;
    std::vector<cpu::ExpertWeights> experts;
    std::vector<std::vector<float>> raw;  // gate, up, down per expert
    for (int e = 0; e < n_experts; ++e) {
        for (auto shape : {Shape{ffn, hidden}, Shape{ffn, hidden}, Shape{hidden, ffn}}) {
            raw.push_back(random_floats(rng, size_t(shape.numel()), 0.3f));
            storage.push_back(tensor_from(raw.back(), shape, DType::BF16));
        }
        experts.push_back({storage[size_t(3 * e)].view, storage[size_t(3 * e + 1)].view,
                           storage[size_t(3 * e + 2)].view});
    }
    // Expert 0: tokens 0, 2, 4; expert 1: none; expert 2: all; expert 3: token 1 but skipped.
    const std::vector<int32_t> offsets = {0, 3, 3, 8, 9};
    const std::vector<int32_t> tokens = {0, 2, 4, 0, 1, 2, 3, 4, 1};
    std::vector<float> weights(tokens.size());
    for (float& w : weights)
        w = std::uniform_real_distribution<float>(0.1f, 1.0f)(rng);
    const std::vector<uint8_t> skip = {0, 0, 0, 1};
    OwnedTensor xt = tensor_from(x, {n_tokens, hidden});
    OwnedTensor out = make_tensor(DType::F32, {n_tokens, hidden});
    std::fill_n(out.view.data_as<float>(), n_tokens * hidden, 0.5f);  // accumulates into this
    cpu::moe_experts({.x = xt.view,
                      .out = out.view,
                      .experts = experts,
                      .offsets = offsets,
                      .token_index = tokens,
                      .token_weight = weights,
                      .skip = skip},
                     pool());
    std::vector<double> want(size_t(n_tokens * hidden), 0.5);
    for (int e = 0; e < 3; ++e)
        for (int s = offsets[size_t(e)]; s < offsets[size_t(e + 1)]; ++s) {
            const int t = tokens[size_t(s)];
            std::vector<double> act(ffn);
            for (int f = 0; f < ffn; ++f) {
                double g = 0, u = 0;
                for (int i = 0; i < hidden; ++i) {
                    g += x[size_t(t * hidden + i)] *
                         stored(raw[size_t(3 * e)][size_t(f * hidden + i)], DType::BF16);
                    u += x[size_t(t * hidden + i)] *
                         stored(raw[size_t(3 * e + 1)][size_t(f * hidden + i)], DType::BF16);
                }
                act[size_t(f)] = g / (1 + std::exp(-g)) * u;
            }
            for (int i = 0; i < hidden; ++i) {
                double d = 0;
                for (int f = 0; f < ffn; ++f)
                    d += act[size_t(f)] *
                         stored(raw[size_t(3 * e + 2)][size_t(i * ffn + f)], DType::BF16);
                want[size_t(t * hidden + i)] += weights[size_t(s)] * d;
            }
        }
    expect_close(out.view.data_as<float>(), want, 1e-5, "moe_experts");
}

}  // namespace
}  // namespace tandem

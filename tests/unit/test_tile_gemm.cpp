// The large-M path (kernels/cpu/tile_gemm.h): bf16 tiles of every weight type through oneDNN,
// against float64, in tile_gemm itself, linear() and the fused MoE kernel, and the policy that
// chooses it. Skips where the CPU has no AVX-512 BF16 (the path is then never taken).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>

#include "kernels/cpu/expert_ffn.h"
#include "kernels/cpu/linear.h"
#include "kernels/cpu/quant.h"
#include "kernels/cpu/tile_gemm.h"
#include "kernels/dtype.h"
#include "tests/test_util.h"

namespace tandem {
namespace {

using cpu::TileGemmPolicy;

const DType kTileTypes[] = {DType::F32,  DType::F16,  DType::BF16, DType::Q8_0, DType::Q4_0,
                            DType::Q5_0, DType::Q4_K, DType::Q5_K, DType::Q6_K, DType::MXFP4};

// Restores the policy (and the ISA) when a test ends.
struct PolicyGuard {
    explicit PolicyGuard(TileGemmPolicy p) { cpu::set_tile_gemm_policy(p); }
    ~PolicyGuard() {
        cpu::set_tile_gemm_policy(TileGemmPolicy::Auto);
        cpu::force_isa(std::nullopt);
    }
};

ThreadPool& pool() {
    static ThreadPool p({.n_threads = 2, .pin = false});
    return p;
}

// Random weights in `type` with their exact values as f32.
struct Weights {
    std::vector<std::byte> data;
    std::vector<float> values;  // [rows, k] as dequantize_row gives them
};

Weights random_weights(std::mt19937_64& rng, DType type, int64_t rows, int64_t k) {
    const std::vector<float> x = test::random_floats(rng, size_t(rows * k), 0.5f);
    Weights w{std::vector<std::byte>(size_t(rows * row_bytes(type, k))),
              std::vector<float>(size_t(rows * k))};
    for (int64_t r = 0; r < rows; ++r) {
        std::byte* row = w.data.data() + r * row_bytes(type, k);
        if (type == DType::F32) {
            std::memcpy(row, x.data() + r * k, size_t(k) * 4);
        } else if (type == DType::F16 || type == DType::BF16) {
            for (int64_t i = 0; i < k; ++i)
                reinterpret_cast<uint16_t*>(row)[i] = type == DType::F16
                                                          ? f32_to_f16(x[size_t(r * k + i)])
                                                          : f32_to_bf16(x[size_t(r * k + i)]);
        } else {
            cpu::quantize_row(type, x.data() + r * k, row, k);
        }
        cpu::row_to_f32(row, type, k, w.values.data() + r * k);
    }
    return w;
}

// Bounds on |result - exact| from the sum of |products| over k terms. bf16 tiles (quantized
// weights) round each factor by at most 2^-9 relative, so each product is within ~2^-8 of exact;
// f32 accumulation adds far less. f32 tiles (f32/f16/bf16 weights) only round in f32: at most
// k * 2^-24 relative for any order of additions.
double product_bound(DType weight_type, double abs_sum, int64_t k) {
    if (cpu::tile_gemm_activation_type(weight_type) == DType::F32)
        return std::ldexp(abs_sum, -24) * double(k + 2) + 1e-7;
    return std::ldexp(abs_sum, -8) * 1.05 + 1e-6;
}

bool tile_path_here() {
    return cpu::tile_gemm_available(DType::BF16);
}

// f32 activations in the tile type of `weight_type`, as bytes.
std::vector<std::byte> tile_activations(const std::vector<float>& a, DType weight_type) {
    const DType type = cpu::tile_gemm_activation_type(weight_type);
    std::vector<std::byte> out(size_t(row_bytes(type, int64_t(a.size()))));
    cpu::to_tile_activations(a.data(), type, out.data(), int64_t(a.size()));
    return out;
}

TEST(TileGemm, EveryTypeMatchesFloat64WithinTheBf16Bound) {
    if (!tile_path_here()) GTEST_SKIP() << "no AVX-512 BF16 / oneDNN brgemm on this CPU";
    TANDEM_SEEDED(seed);
    std::mt19937_64 rng(seed);
    for (DType type : kTileTypes)
        for (int64_t k : {256, 768})
            for (int64_t m : {1, 3, 17, 64})
                for (int64_t n : {16, 37}) {
                    SCOPED_TRACE(testing::Message()
                                 << dtype_name(type) << " m " << m << " n " << n << " k " << k);
                    const Weights w = random_weights(rng, type, n, k);
                    const std::vector<float> a = test::random_floats(rng, size_t(m * k));
                    const std::vector<std::byte> ab = tile_activations(a, type);
                    std::vector<float> y(size_t(m * n), std::numeric_limits<float>::quiet_NaN());
                    cpu::tile_gemm(ab.data(), m, w.data.data(), type, n, k, y.data());
                    for (int64_t i = 0; i < m; ++i)
                        for (int64_t j = 0; j < n; ++j) {
                            double want = 0, abs_sum = 0;
                            for (int64_t l = 0; l < k; ++l) {
                                const double p =
                                    double(a[size_t(i * k + l)]) * w.values[size_t(j * k + l)];
                                want += p;
                                abs_sum += std::fabs(p);
                            }
                            const float got = y[size_t(i * n + j)];
                            ASSERT_TRUE(std::isfinite(got)) << "element " << i << "," << j;
                            ASSERT_NEAR(got, want, product_bound(type, abs_sum, k))
                                << "element " << i << "," << j;
                        }
                }
}

TEST(TileGemm, VectorDequantizersEqualTheReferenceRoundedToBf16) {
    TANDEM_SEEDED(seed);
    std::mt19937_64 rng(seed);
    for (cpu::CpuIsa isa : test::runnable_isas()) {
        PolicyGuard guard(TileGemmPolicy::Auto);
        cpu::force_isa(isa);
        for (DType type : kTileTypes) {
            if (!is_quantized_weight_type(type)) continue;  // converted exactly, to f32
            const int64_t rows = 3, k = 512;
            const Weights w = random_weights(rng, type, rows, k);
            std::vector<uint16_t> got(size_t(rows * k), 0xFFFF);
            cpu::weight_rows_to_bf16(w.data.data(), type, rows, k, got.data());
            for (size_t i = 0; i < got.size(); ++i) {
                // The vector code fuses scale * q - min into one rounding; the reference rounds
                // twice, so the bf16 results may differ by one unit in the last place.
                const float want = bf16_to_f32(f32_to_bf16(w.values[i]));
                const float ulp = std::ldexp(std::fabs(want), -7) + 1e-30f;
                ASSERT_NEAR(bf16_to_f32(got[i]), want, ulp)
                    << dtype_name(type) << " isa " << cpu::isa_name(isa) << " element " << i;
            }
        }
    }
}

TEST(TileGemm, LinearOnTheTilePathMatchesFloat64) {
    if (!tile_path_here()) GTEST_SKIP() << "no AVX-512 BF16 / oneDNN brgemm on this CPU";
    TANDEM_SEEDED(seed);
    std::mt19937_64 rng(seed);
    PolicyGuard guard(TileGemmPolicy::Always);
    for (DType type : {DType::F32, DType::BF16, DType::Q8_0, DType::Q4_K})
        for (int64_t tokens : {1, 5, 70})
            for (int64_t m : {7, 200}) {
                const int64_t k = 512;
                SCOPED_TRACE(testing::Message()
                             << dtype_name(type) << " tokens " << tokens << " m " << m);
                Weights w = random_weights(rng, type, m, k);
                std::vector<float> x = test::random_floats(rng, size_t(tokens * k));
                const std::vector<float> bias = test::random_floats(rng, size_t(m));
                std::vector<float> y(size_t(tokens * m), std::numeric_limits<float>::quiet_NaN());
                cpu::linear(Tensor(x.data(), DType::F32, {tokens, k}),
                            Tensor(w.data.data(), type, {m, k}),
                            Tensor(const_cast<float*>(bias.data()), DType::F32, {m}),
                            Tensor(y.data(), DType::F32, {tokens, m}), pool());
                for (int64_t t = 0; t < tokens; ++t)
                    for (int64_t r = 0; r < m; ++r) {
                        double want = bias[size_t(r)], abs_sum = 0;
                        for (int64_t l = 0; l < k; ++l) {
                            const double p =
                                double(x[size_t(t * k + l)]) * w.values[size_t(r * k + l)];
                            want += p;
                            abs_sum += std::fabs(p);
                        }
                        ASSERT_NEAR(y[size_t(t * m + r)], want, product_bound(type, abs_sum, k))
                            << "token " << t << " row " << r;
                    }
            }
}

// One MoE layer in float64 over the exact weights: sum over the token's experts of
// weight * down(silu(gate x) * up x), added to `initial`.
std::vector<double> moe_reference(const std::vector<Weights>& w, int64_t hidden, int64_t ffn,
                                  const std::vector<float>& x, const std::vector<float>& initial,
                                  const std::vector<int32_t>& offsets,
                                  const std::vector<int32_t>& tokens,
                                  const std::vector<float>& weights,
                                  const std::vector<uint8_t>& skip) {
    std::vector<double> out(initial.begin(), initial.end());
    for (size_t e = 0; e + 1 < offsets.size(); ++e) {
        if (skip[e]) continue;
        for (int32_t s = offsets[e]; s < offsets[e + 1]; ++s) {
            const int32_t t = tokens[size_t(s)];
            std::vector<double> act(static_cast<size_t>(ffn));
            for (int64_t f = 0; f < ffn; ++f) {
                double g = 0, u = 0;
                for (int64_t i = 0; i < hidden; ++i) {
                    g +=
                        w[3 * e].values[size_t(f * hidden + i)] * double(x[size_t(t * hidden + i)]);
                    u += w[3 * e + 1].values[size_t(f * hidden + i)] *
                         double(x[size_t(t * hidden + i)]);
                }
                act[size_t(f)] = g / (1 + std::exp(-g)) * u;
            }
            for (int64_t i = 0; i < hidden; ++i) {
                double d = 0;
                for (int64_t f = 0; f < ffn; ++f)
                    d += w[3 * e + 2].values[size_t(i * ffn + f)] * act[size_t(f)];
                out[size_t(t * hidden + i)] += weights[size_t(s)] * d;
            }
        }
    }
    return out;
}

// Of the largest output change. For quantized weights the tile path rounds x and the
// intermediate to bf16 (measured <= 0.5 % with these shapes) and the dot products quantize them
// to int8 blocks (measured <= 1.8 %); f32 and bf16 weights keep f32 activations on both paths
// (measured 3e-7).
// The int8 tiles of the avx2 level quantize as the dot products do (3e-2).
double tolerance(DType type, TileGemmPolicy policy) {
    if (!is_quantized_weight_type(type)) return 1e-5;
    if (policy == TileGemmPolicy::Always && cpu::tile_gemm_available(type) &&
        cpu::tile_gemm_activation_type(type) == DType::BF16)
        return 1e-2;
    return 3e-2;
}

// Experts with 0, 1, 3, 20 and 40 tokens and one skipped (placed on another device): under Auto
// the busy ones take the tile path and the others the dot products, in one call; under Never
// and Always one path each. All three against float64, at every ISA level this CPU runs (bf16
// tiles at avx512, int8 tiles for Q8_0 and Q4_K at avx2, none at scalar).
TEST(TileGemm, MoeExpertsOnEitherPathMatchFloat64) {
    TANDEM_SEEDED(seed);
    std::mt19937_64 rng(seed);
    const int64_t hidden = 256, ffn = 512, n_tokens = 48;
    const std::vector<int64_t> counts = {0, 1, 3, 20, 40, 12};
    const std::vector<uint8_t> skip = {0, 0, 0, 0, 0, 1};
    std::vector<int32_t> offsets = {0}, tokens;
    std::vector<float> weights;
    for (int64_t c : counts) {
        std::vector<int32_t> pick(static_cast<size_t>(n_tokens));
        std::iota(pick.begin(), pick.end(), 0);
        std::shuffle(pick.begin(), pick.end(), rng);
        std::sort(pick.begin(), pick.begin() + c);
        for (int64_t j = 0; j < c; ++j) {
            tokens.push_back(pick[size_t(j)]);
            weights.push_back(std::uniform_real_distribution<float>(0.1f, 1.0f)(rng));
        }
        offsets.push_back(int32_t(tokens.size()));
    }
    for (DType type : {DType::F32, DType::BF16, DType::Q8_0, DType::Q4_K, DType::Q6_K}) {
        std::vector<Weights> w;
        std::vector<cpu::ExpertWeights> experts;
        for (size_t e = 0; e < counts.size(); ++e) {
            w.push_back(random_weights(rng, type, ffn, hidden));
            w.push_back(random_weights(rng, type, ffn, hidden));
            w.push_back(random_weights(rng, type, hidden, ffn));
        }
        for (size_t e = 0; e < counts.size(); ++e)
            experts.push_back({Tensor(w[3 * e].data.data(), type, {ffn, hidden}),
                               Tensor(w[3 * e + 1].data.data(), type, {ffn, hidden}),
                               Tensor(w[3 * e + 2].data.data(), type, {hidden, ffn})});
        const std::vector<float> x = test::random_floats(rng, size_t(n_tokens * hidden));
        const std::vector<float> initial = test::random_floats(rng, x.size());
        const std::vector<double> want =
            moe_reference(w, hidden, ffn, x, initial, offsets, tokens, weights, skip);
        double scale = 0;
        for (size_t i = 0; i < want.size(); ++i)
            scale = std::max(scale, std::fabs(want[i] - initial[i]));
        for (cpu::CpuIsa isa : test::runnable_isas())
            for (TileGemmPolicy policy :
                 {TileGemmPolicy::Never, TileGemmPolicy::Auto, TileGemmPolicy::Always}) {
                PolicyGuard guard(policy);
                cpu::force_isa(isa);
                SCOPED_TRACE(testing::Message()
                             << dtype_name(type) << " isa " << cpu::isa_name(isa) << " policy "
                             << (policy == TileGemmPolicy::Never    ? "never"
                                 : policy == TileGemmPolicy::Always ? "always"
                                                                    : "auto"));
                std::vector<float> xs = x, out = initial;
                cpu::moe_experts({.x = Tensor(xs.data(), DType::F32, {n_tokens, hidden}),
                                  .out = Tensor(out.data(), DType::F32, {n_tokens, hidden}),
                                  .experts = experts,
                                  .offsets = offsets,
                                  .token_index = tokens,
                                  .token_weight = weights,
                                  .skip = skip},
                                 pool());
                for (size_t i = 0; i < out.size(); ++i)
                    ASSERT_NEAR(out[i], want[i], tolerance(type, policy) * scale)
                        << "element " << i;
            }
    }
}

TEST(TileGemm, PolicyAndIsaDecideThePath) {
    PolicyGuard guard(TileGemmPolicy::Never);
    EXPECT_FALSE(cpu::use_tile_gemm(DType::Q8_0, 1000));
    cpu::set_tile_gemm_policy(TileGemmPolicy::Always);
    EXPECT_EQ(cpu::use_tile_gemm(DType::Q8_0, 1), tile_path_here());
    EXPECT_FALSE(cpu::use_tile_gemm(DType::Q8_K, 1000)) << "an activation type, not a weight";
    EXPECT_FALSE(cpu::use_tile_gemm(DType::Q8_0, 0));
    cpu::set_tile_gemm_policy(TileGemmPolicy::Auto);
    const int64_t min = cpu::tile_gemm_min_tokens(DType::Q4_K);
    EXPECT_FALSE(cpu::use_tile_gemm(DType::Q4_K, min - 1));
    EXPECT_EQ(cpu::use_tile_gemm(DType::Q4_K, min), tile_path_here());
    if (cpu::CpuIsa::Avx2 <= cpu::detected_isa()) {
        cpu::force_isa(cpu::CpuIsa::Avx2);
        EXPECT_TRUE(cpu::use_tile_gemm(DType::Q4_K, 1000)) << "int8 tiles (int8_tiles.h)";
        EXPECT_FALSE(cpu::use_tile_gemm(DType::Q6_K, 1000)) << "bf16 tiles need the avx512 level";
    }
    cpu::force_isa(cpu::CpuIsa::Scalar);
    EXPECT_FALSE(cpu::use_tile_gemm(DType::Q4_K, 1000)) << "no tiles at the scalar level";
    EXPECT_GE(cpu::tile_gemm_rows(DType::Q4_K, 2048), 16);
    EXPECT_LE(cpu::tile_gemm_rows(DType::Q4_K, 2048) * 2048 * 2, int64_t(256) << 10);
    EXPECT_LE(cpu::tile_gemm_rows(DType::BF16, 2048) * 2048 * 4, int64_t(256) << 10)
        << "bf16 weights take f32 tiles";
    EXPECT_EQ(cpu::tile_gemm_rows(DType::Q8_0, 14336), 16) << "at least 16 rows whatever k";
}

}  // namespace
}  // namespace tandem

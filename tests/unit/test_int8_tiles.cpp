// The int8 tiles of the avx2 level (kernels/cpu/int8_tiles.h), reached through tile_gemm with the
// ISA forced to avx2 (so they run on AVX-512 machines too): every output element against float64
// over the same quantized operands (only f32 rounding may differ), against float64 over the f32
// activations (plus the activations' quantization error, bounded per element), and against the
// dot products of every ISA level. Odd shapes: one token, token and row counts that are not
// multiples of the inner loop's, k of one block, of a partial group of 8 blocks and of several
// super-blocks; sentinels around the output.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include "kernels/cpu/cpu_isa.h"
#include "kernels/cpu/linear.h"
#include "kernels/cpu/quant.h"
#include "kernels/cpu/tile_gemm.h"
#include "kernels/cpu/vec_dot.h"
#include "kernels/dtype.h"
#include "kernels/error.h"
#include "tests/test_util.h"

namespace tandem {
namespace {

using cpu::CpuIsa;
using cpu::TileGemmPolicy;

constexpr float kSentinel = -12345.0f;

struct Guard {
    explicit Guard(TileGemmPolicy p) { cpu::set_tile_gemm_policy(p); }
    ~Guard() {
        cpu::set_tile_gemm_policy(TileGemmPolicy::Auto);
        cpu::force_isa(std::nullopt);
        cpu::force_avx_vnni(std::nullopt);
    }
};

bool avx2_runs() {
    return int(cpu::detected_isa()) >= int(CpuIsa::Avx2);
}

ThreadPool& pool() {
    static ThreadPool p({.n_threads = 2, .pin = false});
    return p;
}

// Rows of `type` quantized from random floats, and the values they hold.
struct Rows {
    std::vector<std::byte> data;
    std::vector<float> values;
    int64_t row_bytes = 0;
};

Rows quantized_rows(std::mt19937_64& rng, DType type, int64_t rows, int64_t k, float std) {
    const std::vector<float> x = test::random_floats(rng, size_t(rows * k), std);
    Rows out{std::vector<std::byte>(size_t(rows * row_bytes(type, k))),
             std::vector<float>(size_t(rows * k)), row_bytes(type, k)};
    for (int64_t r = 0; r < rows; ++r) {
        cpu::quantize_row(type, x.data() + r * k, out.data.data() + r * out.row_bytes, k);
        cpu::dequantize_row(type, out.data.data() + r * out.row_bytes, out.values.data() + r * k,
                            k);
    }
    return out;
}

// Largest |error| that quantizing x to `type` (Q8_0 or Q8_K, round to nearest) may add to the
// dot of x with w: half a quantization step per element, times |w|.
double activation_error(const float* x, const float* w, DType type, int64_t k) {
    const int64_t block = dtype_block_size(type);
    double bound = 0;
    for (int64_t b = 0; b < k; b += block) {
        float amax = 0;
        for (int64_t i = b; i < b + block; ++i)
            amax = std::max(amax, std::fabs(x[i]));
        double w_abs = 0;
        for (int64_t i = b; i < b + block; ++i)
            w_abs += std::fabs(w[i]);
        // Q8_0 stores its step in f16, which rounds it by up to 2^-11 relative: a step 1e-3
        // larger covers that.
        bound += (amax / 127.0) * 0.5 * 1.001 * w_abs;
    }
    return bound;
}

// Every element of the tiles (AVX-VNNI on or off, as `vnni` says) against float64 and the dots.
void every_element_matches_float64_and_the_dot_products(std::mt19937_64& rng, bool vnni) {
    Guard guard(TileGemmPolicy::Always);
    cpu::force_avx_vnni(vnni);
    for (DType type : {DType::Q8_0, DType::Q4_K, DType::MXFP4}) {
        const DType act_type = cpu::vec_dot_type(type);
        const std::vector<int64_t> ks = type != DType::Q4_K
                                            ? std::vector<int64_t>{32, 288, 512, 800}
                                            : std::vector<int64_t>{256, 768};
        for (int64_t k : ks)
            for (int64_t m : {1, 2, 5, 17})
                for (int64_t n : {1, 3, 7, 37}) {
                    SCOPED_TRACE(testing::Message()
                                 << dtype_name(type) << " m " << m << " n " << n << " k " << k);
                    cpu::force_isa(CpuIsa::Avx2);
                    ASSERT_TRUE(cpu::tile_gemm_available(type));
                    ASSERT_EQ(cpu::tile_gemm_activation_type(type), act_type);
                    const Rows w = quantized_rows(rng, type, n, k, 0.5f);
                    const std::vector<float> x = test::random_floats(rng, size_t(m * k));
                    std::vector<std::byte> acts(size_t(m * row_bytes(act_type, k)));
                    for (int64_t i = 0; i < m; ++i)
                        cpu::to_tile_activations(x.data() + i * k, act_type,
                                                 acts.data() + i * row_bytes(act_type, k), k);
                    std::vector<float> xq(size_t(m * k));
                    for (int64_t i = 0; i < m; ++i)
                        cpu::dequantize_row(act_type, acts.data() + i * row_bytes(act_type, k),
                                            xq.data() + i * k, k);
                    // Sentinels before and after the output.
                    std::vector<float> y(size_t(m * n + 16), kSentinel);
                    cpu::tile_gemm(acts.data(), m, w.data.data(), type, n, k, y.data() + 8);
                    for (int i = 0; i < 8; ++i) {
                        ASSERT_EQ(y[size_t(i)], kSentinel);
                        ASSERT_EQ(y[size_t(8 + m * n + i)], kSentinel);
                    }
                    for (int64_t i = 0; i < m; ++i)
                        for (int64_t j = 0; j < n; ++j) {
                            const float* wr = w.values.data() + j * k;
                            double exact_q = 0, exact = 0, abs_sum = 0;
                            for (int64_t l = 0; l < k; ++l) {
                                exact_q += double(xq[size_t(i * k + l)]) * wr[l];
                                exact += double(x[size_t(i * k + l)]) * wr[l];
                                abs_sum += std::fabs(double(xq[size_t(i * k + l)]) * wr[l]);
                            }
                            const float got = y[size_t(8 + i * n + j)];
                            ASSERT_TRUE(std::isfinite(got)) << "element " << i << "," << j;
                            // f32 scales and sums: a few roundings of 2^-24 per block, on
                            // terms whose sizes add to at most ~4x abs_sum (Q4_K's scaled sums
                            // and mins may each exceed their difference).
                            const double f32_bound =
                                std::ldexp(4 * abs_sum, -24) * double(k / 32 + 8) + 1e-6;
                            ASSERT_NEAR(got, exact_q, f32_bound) << "element " << i << "," << j;
                            ASSERT_NEAR(
                                got, exact,
                                f32_bound + activation_error(x.data() + i * k, wr, act_type, k))
                                << "element " << i << "," << j;
                            for (CpuIsa isa : test::runnable_isas()) {
                                const float dot = cpu::row_dot(cpu::vec_dot_kernels_for(isa), type)(
                                    w.data.data() + j * w.row_bytes,
                                    acts.data() + i * row_bytes(act_type, k), k);
                                ASSERT_NEAR(got, dot, 2 * f32_bound)
                                    << "element " << i << "," << j << " dot of "
                                    << cpu::isa_name(isa);
                            }
                        }
                }
    }
}

TEST(Int8Tiles, EveryElementMatchesFloat64AndTheDotProductsOnEveryIsa) {
    if (!avx2_runs()) GTEST_SKIP() << "this CPU has no AVX2: the int8 tiles never run";
    TANDEM_SEEDED(seed);
    std::mt19937_64 rng(seed);
    every_element_matches_float64_and_the_dot_products(rng, false);
}

TEST(Int8Tiles, WithAvxVnniEveryElementMatchesFloat64AndTheDotProducts) {
    if (!avx2_runs() || !cpu::cpu_has_avx_vnni())
        GTEST_SKIP() << "this CPU has no AVX-VNNI (VEX vpdpbusd): that variant never runs";
    TANDEM_SEEDED(seed);
    std::mt19937_64 rng(seed);
    every_element_matches_float64_and_the_dot_products(rng, true);
}

// The AVX-VNNI variant (rows interleaved, weights biased to unsigned bytes, one vpdpbusd per 32
// products) and the vpmaddubsw one (row-major groups, the sign trick) have the same int32 sums per
// block and add them in f32 in another order, so they agree to the f32 rounding of the sum of
// |products| — also on weights and activations at the ends of Q8_0's range (each block's largest
// |x| quantizes to +-127; weight bytes of -128, which no quantizer of ours writes but a file may
// hold), where a saturating or wrongly biased product would be off by far more.
TEST(Int8Tiles, AvxVnniAndMaddubsVariantsAgreeAtTheEndsOfTheRange) {
    if (!avx2_runs() || !cpu::cpu_has_avx_vnni())
        GTEST_SKIP() << "this CPU has no AVX-VNNI (VEX vpdpbusd): nothing to compare";
    TANDEM_SEEDED(seed);
    std::mt19937_64 rng(seed);
    Guard guard(TileGemmPolicy::Always);
    cpu::force_isa(CpuIsa::Avx2);
    const int64_t k = 800, m = 7, n = 19;  // 25 blocks: a partial group of 8; 3 row blocks
    Rows w = quantized_rows(rng, DType::Q8_0, n, k, 0.5f);
    auto* blocks = reinterpret_cast<cpu::BlockQ8_0*>(w.data.data());
    for (int64_t b = 0; b < n * k / cpu::kQK; b += 3) {  // every third block starts with -128
        blocks[b].qs[0] = -128;
        w.values[size_t(b * cpu::kQK)] = -128.0f * f16_to_f32(blocks[b].d);
    }
    std::vector<float> x = test::random_floats(rng, size_t(m * k));
    for (size_t i = 0; i < x.size(); i += 2)  // half the elements at +-max: bytes of +-127
        x[i] = x[i] < 0 ? -4.0f : 4.0f;
    std::vector<std::byte> acts(size_t(m * row_bytes(DType::Q8_0, k)));
    std::vector<float> xq(size_t(m * k));
    for (int64_t i = 0; i < m; ++i) {
        std::byte* row = acts.data() + i * row_bytes(DType::Q8_0, k);
        cpu::to_tile_activations(x.data() + i * k, DType::Q8_0, row, k);
        cpu::dequantize_row(DType::Q8_0, row, xq.data() + i * k, k);
    }
    std::vector<float> y[2];
    for (bool vnni : {false, true}) {
        cpu::force_avx_vnni(vnni);
        y[vnni].assign(size_t(m * n), kSentinel);
        cpu::tile_gemm(acts.data(), m, w.data.data(), DType::Q8_0, n, k, y[vnni].data());
    }
    for (int64_t i = 0; i < m; ++i)
        for (int64_t j = 0; j < n; ++j) {
            double exact = 0, abs_sum = 0;
            for (int64_t l = 0; l < k; ++l) {
                const double product = double(xq[size_t(i * k + l)]) * w.values[size_t(j * k + l)];
                exact += product;
                abs_sum += std::fabs(product);
            }
            const double bound = std::ldexp(abs_sum, -24) * double(k / 32 + 8) + 1e-6;
            const size_t at = size_t(i * n + j);
            for (bool vnni : {false, true})
                ASSERT_NEAR(y[vnni][at], exact, bound)
                    << "element " << i << "," << j << (vnni ? " AVX-VNNI" : " vpmaddubsw");
        }
}

TEST(Int8Tiles, ForcingAvxVnniOnACpuWithoutItFails) {
    if (cpu::cpu_has_avx_vnni()) GTEST_SKIP() << "this CPU has AVX-VNNI: nothing to refuse";
    EXPECT_THROW(cpu::force_avx_vnni(true), Error);
    EXPECT_FALSE(cpu::avx_vnni_active());
}

// linear() at the avx2 level: the tile path (Always, and Auto from its threshold up) against the
// dot products (Never) at the same level, every element, with a bias and row counts that split
// into uneven tasks.
TEST(Int8Tiles, LinearOnTheInt8TilesMatchesTheDotProducts) {
    if (!avx2_runs()) GTEST_SKIP() << "this CPU has no AVX2: the int8 tiles never run";
    TANDEM_SEEDED(seed);
    std::mt19937_64 rng(seed);
    Guard guard(TileGemmPolicy::Never);
    for (DType type : {DType::Q8_0, DType::Q4_K})
        for (int64_t tokens : {1, 19, 70})
            for (int64_t m : {5, 133}) {
                const int64_t k = 512;
                SCOPED_TRACE(testing::Message()
                             << dtype_name(type) << " tokens " << tokens << " m " << m);
                const Rows w = quantized_rows(rng, type, m, k, 0.5f);
                const std::vector<float> x = test::random_floats(rng, size_t(tokens * k));
                const std::vector<float> bias = test::random_floats(rng, size_t(m));
                const auto run = [&](TileGemmPolicy policy) {
                    cpu::force_isa(CpuIsa::Avx2);
                    cpu::set_tile_gemm_policy(policy);
                    std::vector<float> xs = x, b = bias;
                    std::vector<float> y(size_t(tokens * m),
                                         std::numeric_limits<float>::quiet_NaN());
                    cpu::linear(Tensor(xs.data(), DType::F32, {tokens, k}),
                                Tensor(const_cast<std::byte*>(w.data.data()), type, {m, k}),
                                Tensor(b.data(), DType::F32, {m}),
                                Tensor(y.data(), DType::F32, {tokens, m}), pool());
                    return y;
                };
                const std::vector<float> dots = run(TileGemmPolicy::Never);
                const std::vector<float> tiles = run(TileGemmPolicy::Always);
                EXPECT_TRUE(cpu::use_tile_gemm(type, 1));
                for (size_t i = 0; i < dots.size(); ++i) {
                    const size_t row = i % size_t(m), token = i / size_t(m);
                    double abs_sum = std::fabs(bias[row]);
                    for (int64_t l = 0; l < k; ++l)
                        abs_sum += std::fabs(double(x[token * size_t(k) + size_t(l)]) *
                                             w.values[row * size_t(k) + size_t(l)]);
                    ASSERT_TRUE(std::isfinite(tiles[i])) << "element " << i;
                    ASSERT_NEAR(tiles[i], dots[i], std::ldexp(abs_sum, -16) + 1e-6)
                        << "element " << i;
                }
            }
}

TEST(Int8Tiles, OnlyAtTheAvx2LevelAndOnlyForTheirTypes) {
    if (!avx2_runs()) GTEST_SKIP() << "this CPU has no AVX2";
    Guard guard(TileGemmPolicy::Auto);
    cpu::force_isa(CpuIsa::Avx2);
    EXPECT_TRUE(cpu::tile_gemm_available(DType::Q8_0));
    EXPECT_TRUE(cpu::tile_gemm_available(DType::Q4_K));
    EXPECT_FALSE(cpu::tile_gemm_available(DType::Q6_K)) << "keeps the dot products at avx2";
    EXPECT_FALSE(cpu::tile_gemm_available(DType::F32));
    EXPECT_EQ(cpu::tile_gemm_activation_type(DType::Q4_K), DType::Q8_K);
    const int64_t min = cpu::tile_gemm_min_tokens(DType::Q8_0);
    EXPECT_FALSE(cpu::use_tile_gemm(DType::Q8_0, min - 1));
    EXPECT_TRUE(cpu::use_tile_gemm(DType::Q8_0, min));
    EXPECT_TRUE(cpu::tile_gemm_available(DType::MXFP4)) << "on Q8_0's tiles";
    EXPECT_EQ(cpu::tile_gemm_activation_type(DType::MXFP4), DType::Q8_0);
    cpu::force_isa(CpuIsa::Scalar);
    EXPECT_FALSE(cpu::tile_gemm_available(DType::Q8_0)) << "no tiles at the scalar level";
}

}  // namespace
}  // namespace tandem

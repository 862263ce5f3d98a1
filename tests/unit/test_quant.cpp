// Quantized weight types: round trips, the dot products of every ISA path against a float64
// reference, linear() and the fused MoE kernel with quantized experts, and bit-exactness against
// gguf-py (fixtures in tests/data/quant/, written by tools/make_quant_fixtures.py).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "kernels/cpu/expert_ffn.h"
#include "kernels/cpu/linear.h"
#include "kernels/cpu/quant.h"
#include "kernels/cpu/tile_gemm.h"
#include "kernels/cpu/vec_dot.h"
#include "kernels/error.h"
#include "tests/test_util.h"

namespace tandem {
namespace {

using cpu::CpuIsa;
using test::IsaGuard;
using test::runnable_isas;

const DType kWeightTypes[] = {DType::Q8_0, DType::Q5_0, DType::Q4_0, DType::Q4_K,
                              DType::Q5_K, DType::Q6_K, DType::MXFP4};

std::vector<std::byte> quantize(DType type, const std::vector<float>& x, int64_t rows, int64_t k) {
    std::vector<std::byte> out(size_t(rows * row_bytes(type, k)));
    for (int64_t r = 0; r < rows; ++r)
        cpu::quantize_row(type, x.data() + r * k, out.data() + r * row_bytes(type, k), k);
    return out;
}

std::vector<float> dequantize(DType type, const std::vector<std::byte>& q, int64_t rows,
                              int64_t k) {
    std::vector<float> out(static_cast<size_t>(rows * k));
    for (int64_t r = 0; r < rows; ++r)
        cpu::dequantize_row(type, q.data() + r * row_bytes(type, k), out.data() + r * k, k);
    return out;
}

TEST(Quant, RoundTripErrorIsWithinEachTypesBound) {
    TANDEM_SEEDED(seed);
    std::mt19937_64 rng(seed);
    const int64_t k = 1024;
    const auto x = test::random_floats(rng, size_t(k));
    // Relative RMS error bounds for Gaussian data (bits per weight 8.5, 4.5, 4.5, 5.5, 6.6).
    const std::map<DType, double> bound = {
        {DType::Q8_0, 0.007}, {DType::Q4_0, 0.12},  {DType::Q5_0, 0.06},  {DType::Q4_K, 0.1},
        {DType::Q5_K, 0.05},  {DType::Q6_K, 0.025}, {DType::Q8_K, 0.009}, {DType::MXFP4, 0.14}};
    for (const auto& [type, limit] : bound) {
        const auto back = dequantize(type, quantize(type, x, 1, k), 1, k);
        double err = 0, norm = 0;
        for (int64_t i = 0; i < k; ++i) {
            err += std::pow(double(back[size_t(i)]) - x[size_t(i)], 2);
            norm += double(x[size_t(i)]) * x[size_t(i)];
        }
        EXPECT_LT(std::sqrt(err / norm), limit) << dtype_name(type);
    }
}

TEST(Quant, ZeroAndConstantBlocks) {
    for (DType type : kWeightTypes) {
        std::vector<float> zeros(256, 0.0f), constant(256, 0.75f);
        for (float v : dequantize(type, quantize(type, zeros, 1, 256), 1, 256))
            EXPECT_EQ(v, 0.0f) << dtype_name(type);
        for (float v : dequantize(type, quantize(type, constant, 1, 256), 1, 256))
            EXPECT_NEAR(v, 0.75f, 0.75f * 0.08f) << dtype_name(type);
    }
}

// MXFP4 blocks as the OCP MX spec and GGUF lay them out, written byte by byte: the e8m0 byte
// first, then 16 bytes whose low nibbles are elements 0-15 and high nibbles 16-31; value =
// e2m1(nibble) * 2^(e - 127). Also the extreme scales (e = 0 and 1 give f32 subnormals).
TEST(Quant, Mxfp4BlockLayoutIsTheSpecs) {
    const float e2m1[16] = {0, 0.5, 1, 1.5, 2, 3, 4, 6, -0.0f, -0.5, -1, -1.5, -2, -3, -4, -6};
    TANDEM_SEEDED(seed);
    std::mt19937_64 rng(seed);
    for (int e : {0, 1, 2, 100, 127, 130, 254}) {
        std::vector<std::byte> block(17);
        block[0] = std::byte(e);
        for (int j = 1; j < 17; ++j)
            block[size_t(j)] = std::byte(rng() & 0xFF);
        std::vector<float> got(32);
        cpu::dequantize_row(DType::MXFP4, block.data(), got.data(), 32);
        for (int j = 0; j < 32; ++j) {
            const uint8_t byte = uint8_t(block[size_t(1 + j % 16)]);
            const int nibble = j < 16 ? byte & 0xF : byte >> 4;
            EXPECT_EQ(got[size_t(j)], float(std::ldexp(double(e2m1[nibble]), e - 127)))
                << "e " << e << " element " << j;
        }
        // Values on the grid quantize back to the same values (-0 becomes +0). Not for e = 254,
        // where 3 * 2^127 and above overflow f32 to infinity.
        if (e == 254) continue;
        std::vector<std::byte> again(17);
        cpu::quantize_row(DType::MXFP4, got.data(), again.data(), 32);
        std::vector<float> back(32);
        cpu::dequantize_row(DType::MXFP4, again.data(), back.data(), 32);
        for (int j = 0; j < 32; ++j)
            EXPECT_EQ(back[size_t(j)], got[size_t(j)]) << "e " << e << " element " << j;
    }
}

// MXFP4 dots at odd and even block counts (one block, gpt-oss's 2880 = 90 blocks, 91), 1..4
// tokens, every ISA, against float64 of the dequantized rows.
TEST(Quant, Mxfp4DotsOfOddAndEvenBlockCountsMatchFloat64) {
    TANDEM_SEEDED(seed);
    std::mt19937_64 rng(seed);
    for (int64_t k : {32, 64, 96, 2880, 2912}) {
        const auto w = test::random_floats(rng, size_t(k));
        const auto wq = quantize(DType::MXFP4, w, 1, k);
        const auto wd = dequantize(DType::MXFP4, wq, 1, k);
        std::vector<std::vector<std::byte>> xq;
        std::vector<const void*> rows;
        std::vector<double> want, scale;
        for (int t = 0; t < cpu::kMaxDotTokens; ++t) {
            const auto x = test::random_floats(rng, size_t(k), 2.0f);
            xq.push_back(quantize(DType::Q8_0, x, 1, k));
            const auto xd = dequantize(DType::Q8_0, xq.back(), 1, k);
            double dot = 0, mag = 0;
            for (int64_t i = 0; i < k; ++i) {
                dot += double(wd[size_t(i)]) * xd[size_t(i)];
                mag += std::fabs(double(wd[size_t(i)]) * xd[size_t(i)]);
            }
            want.push_back(dot);
            scale.push_back(mag);
        }
        for (const auto& x : xq)
            rows.push_back(x.data());
        for (CpuIsa isa : runnable_isas()) {
            const auto& kernels = cpu::vec_dot_kernels_for(isa);
            for (int n = 1; n <= cpu::kMaxDotTokens; ++n) {
                float out[cpu::kMaxDotTokens];
                cpu::row_dot_n(kernels, DType::MXFP4)(wq.data(), rows.data(), n, k, out);
                for (int t = 0; t < n; ++t)
                    EXPECT_NEAR(out[t], want[size_t(t)], 1e-5 * scale[size_t(t)] + 1e-6)
                        << "k " << k << " isa " << cpu::isa_name(isa) << " n " << n << " token "
                        << t;
            }
        }
    }
}

// The several-row dots (decode): RowsDotFn against float64 of the dequantized rows and against
// the one-row dot of the same level, for Q8_0, Q4_K and MXFP4. Every row count at fixed block
// counts chosen for the kernels' edges (one block; odd counts, which the 512-bit kernels run as a
// single-block tail), then random row counts in [1, kMaxDotRows] at random multiples of the
// block; fresh rows each time. Every output is checked, outputs start as NaN and a sentinel
// follows the last; rows are passed in reverse order (a tile's rows need not be adjacent or
// ascending). Every ISA level the CPU runs, the avx2 level also with AVX-VNNI where the CPU has
// it (its several-row dots have a vpmaddubsw and a vpdpbusd/vpdpwssd variant).
struct SeveralRowDotCase {
    DType type;
    std::vector<int64_t> ks;  // each with every row count
    int random_shapes;        // then this many (random row count, random k)
    int64_t max_random_blocks;
    // Block magnitudes spread over 2^min_exponent..2^max_exponent (MXFP4: so that the shared
    // exponent varies); 0, 0 leaves them alone.
    int min_exponent = 0, max_exponent = 0;
    // Edits the quantized rows before the reference is taken (extreme bytes); may be null.
    void (*edit_weights)(std::vector<std::byte>& wq, std::mt19937_64& rng) = nullptr;
};

std::vector<std::pair<CpuIsa, bool>> several_row_dot_variants() {
    std::vector<std::pair<CpuIsa, bool>> out;
    for (CpuIsa isa : runnable_isas()) {
        out.emplace_back(isa, false);
        if (isa == CpuIsa::Avx2 && cpu::cpu_has_avx_vnni()) out.emplace_back(isa, true);
    }
    return out;
}

struct AvxVnniGuard {
    ~AvxVnniGuard() { cpu::force_avx_vnni(std::nullopt); }
};

// Returns how many (shape, level) pairs had a several-row dot to check.
int check_several_row_dots(const SeveralRowDotCase& c, std::mt19937_64& rng) {
    const AvxVnniGuard restore_vnni;
    const int64_t block = dtype_block_size(c.type);
    const DType act = cpu::vec_dot_type(c.type);
    std::vector<std::pair<int64_t, int>> shapes;  // (k, rows)
    for (int64_t k : c.ks)
        for (int n = 1; n <= cpu::kMaxDotRows; ++n)
            shapes.emplace_back(k, n);
    std::uniform_int_distribution<int> row_count(1, cpu::kMaxDotRows);
    std::uniform_int_distribution<int64_t> block_count(1, c.max_random_blocks);
    for (int s = 0; s < c.random_shapes; ++s)
        shapes.emplace_back(block * block_count(rng), row_count(rng));
    std::uniform_int_distribution<int> exponent(c.min_exponent, c.max_exponent);
    int tested = 0;
    for (const auto& [k, n] : shapes) {
        auto w = test::random_floats(rng, size_t(n * k));
        if (c.min_exponent != 0 || c.max_exponent != 0) {
            for (size_t i = 0; i < w.size(); i += size_t(block)) {
                const float block_scale = std::ldexp(1.0f, exponent(rng));
                for (size_t j = i; j < i + size_t(block); ++j)
                    w[j] *= block_scale;
            }
        }
        auto wq = quantize(c.type, w, n, k);
        if (c.edit_weights) c.edit_weights(wq, rng);
        const auto wd = dequantize(c.type, wq, n, k);
        const auto x = test::random_floats(rng, size_t(k), 2.0f);
        const auto xq = quantize(act, x, 1, k);
        const auto xd = dequantize(act, xq, 1, k);
        const void* rows[cpu::kMaxDotRows];
        for (int j = 0; j < n; ++j)
            rows[j] = wq.data() + (n - 1 - j) * row_bytes(c.type, k);
        for (const auto& [isa, vnni] : several_row_dot_variants()) {
            cpu::force_avx_vnni(vnni);
            const auto& kernels = cpu::vec_dot_kernels_for(isa);
            const cpu::RowsDotFn dot_rows = cpu::row_dot_rows(kernels, c.type);
            if (isa != CpuIsa::Scalar) {
                EXPECT_NE(dot_rows, nullptr) << dtype_name(c.type) << " " << cpu::isa_name(isa);
            }
            if (!dot_rows) continue;
            ++tested;
            float out[cpu::kMaxDotRows + 1];
            std::fill(std::begin(out), std::end(out), std::nanf(""));
            out[n] = 12345.0f;
            dot_rows(rows, n, xq.data(), k, out);
            const auto where = ::testing::Message()
                               << dtype_name(c.type) << " k " << k << " isa " << cpu::isa_name(isa)
                               << (vnni ? " avx_vnni" : "") << " rows " << n;
            EXPECT_EQ(out[n], 12345.0f) << where << ": wrote past the last row";
            for (int j = 0; j < n; ++j) {
                const int64_t row = n - 1 - j;
                double want = 0, scale = 0;
                for (int64_t i = 0; i < k; ++i) {
                    const double p = double(wd[size_t(row * k + i)]) * xd[size_t(i)];
                    want += p;
                    scale += std::fabs(p);
                }
                const float single = cpu::row_dot(kernels, c.type)(rows[j], xq.data(), k);
                EXPECT_NEAR(out[j], want, 1e-5 * scale + 1e-30) << where << " row " << j;
                EXPECT_NEAR(out[j], single, 1e-5 * scale + 1e-30) << where << " row " << j;
            }
        }
    }
    return tested;
}

TEST(Quant, Mxfp4SeveralRowDotsMatchFloat64) {
    TANDEM_SEEDED(seed);
    std::mt19937_64 rng(seed);
    const int tested = check_several_row_dots({.type = DType::MXFP4,
                                               .ks = {32, 64, 96, 2880, 2912},
                                               .random_shapes = 24,
                                               .max_random_blocks = 100,
                                               .min_exponent = -40,
                                               .max_exponent = 8},
                                              rng);
    if (tested == 0) GTEST_SKIP() << "no several-row MXFP4 dot on this CPU's instruction sets";
}

// Q8_0 rows with -128 bytes (which ggml's quantizer never writes, but a file may hold): the
// byte whose sign flip overflows, at the edge of the sign trick and of the 128 bias.
void put_min_bytes(std::vector<std::byte>& wq, std::mt19937_64& rng) {
    const size_t blocks = wq.size() / sizeof(cpu::BlockQ8_0);
    std::uniform_int_distribution<size_t> byte(0, cpu::kQK - 1);
    for (size_t b = 0; b < blocks; b += 3) {
        cpu::BlockQ8_0 block;
        std::memcpy(&block, wq.data() + b * sizeof(block), sizeof(block));
        block.qs[byte(rng)] = -128;
        std::memcpy(wq.data() + b * sizeof(block), &block, sizeof(block));
    }
}

TEST(Quant, Q8_0SeveralRowDotsMatchFloat64) {
    TANDEM_SEEDED(seed);
    std::mt19937_64 rng(seed);
    const int tested = check_several_row_dots({.type = DType::Q8_0,
                                               .ks = {32, 64, 96, 2048, 2080},
                                               .random_shapes = 24,
                                               .max_random_blocks = 100,
                                               .edit_weights = put_min_bytes},
                                              rng);
    if (tested == 0) GTEST_SKIP() << "no several-row Q8_0 dot on this CPU's instruction sets";
}

TEST(Quant, Q4_KSeveralRowDotsMatchFloat64) {
    TANDEM_SEEDED(seed);
    std::mt19937_64 rng(seed);
    const int tested = check_several_row_dots({.type = DType::Q4_K,
                                               .ks = {256, 512, 2048, 2816},
                                               .random_shapes = 24,
                                               .max_random_blocks = 12},
                                              rng);
    if (tested == 0) GTEST_SKIP() << "no several-row Q4_K dot on this CPU's instruction sets";
}

TEST(Quant, RejectsRowsThatAreNotWholeBlocks) {
    std::vector<float> x(100);
    std::vector<std::byte> out(1000);
    EXPECT_THROW(cpu::quantize_row(DType::Q4_K, x.data(), out.data(), 100), Error);
    EXPECT_THROW(cpu::quantize_row(DType::BF16, x.data(), out.data(), 64), Error);
    EXPECT_EQ(cpu::quant_type_for_row(DType::Q4_K, 1408), DType::Q8_0);  // 1408 = 5.5 x 256
    EXPECT_EQ(cpu::quant_type_for_row(DType::Q4_K, 2048), DType::Q4_K);
    EXPECT_EQ(cpu::quant_type_for_row(DType::Q8_0, 100), DType::BF16);
}

// Each weight type's dot product on every ISA equals the float64 dot of the dequantized weight
// row and the dequantized activation row (the integer arithmetic is exact; only f32 scaling
// rounds).
TEST(Quant, DotProductsOfEveryIsaMatchFloat64) {
    IsaGuard guard;
    TANDEM_SEEDED(seed);
    std::mt19937_64 rng(seed);
    for (int64_t k : {256, 512, 2816}) {
        const auto w = test::random_floats(rng, size_t(k));
        const auto x = test::random_floats(rng, size_t(k), 2.0f);
        for (DType type : kWeightTypes) {
            const DType act = cpu::vec_dot_type(type);
            const auto wq = quantize(type, w, 1, k), xq = quantize(act, x, 1, k);
            const auto wd = dequantize(type, wq, 1, k), xd = dequantize(act, xq, 1, k);
            double want = 0, scale = 0;
            for (int64_t i = 0; i < k; ++i) {
                want += double(wd[size_t(i)]) * xd[size_t(i)];
                scale += std::fabs(double(wd[size_t(i)]) * xd[size_t(i)]);
            }
            for (CpuIsa isa : runnable_isas()) {
                const float got =
                    cpu::row_dot(cpu::vec_dot_kernels_for(isa), type)(wq.data(), xq.data(), k);
                EXPECT_NEAR(got, want, 1e-5 * scale + 1e-6)
                    << dtype_name(type) << " k=" << k << " isa=" << cpu::isa_name(isa);
            }
        }
    }
}

// The several-tokens-per-pass kernels give what one dot per token gives, for every weight type,
// ISA and token count.
TEST(Quant, MultiTokenDotsEqualSingleDots) {
    TANDEM_SEEDED(seed);
    std::mt19937_64 rng(seed);
    const int64_t k = 768;
    const auto w = test::random_floats(rng, size_t(k));
    for (DType type : {DType::F32, DType::F16, DType::BF16, DType::Q8_0, DType::Q4_0, DType::Q4_K,
                       DType::Q5_K, DType::Q6_K, DType::MXFP4}) {
        std::vector<std::byte> wq(size_t(row_bytes(type, k)));
        if (is_quantized_weight_type(type)) {
            wq = quantize(type, w, 1, k);
        } else {
            for (int64_t i = 0; i < k; ++i) {
                if (type == DType::F32) reinterpret_cast<float*>(wq.data())[i] = w[size_t(i)];
                if (type == DType::BF16)
                    reinterpret_cast<uint16_t*>(wq.data())[i] = f32_to_bf16(w[size_t(i)]);
                if (type == DType::F16)
                    reinterpret_cast<uint16_t*>(wq.data())[i] = f32_to_f16(w[size_t(i)]);
            }
        }
        const DType act = cpu::vec_dot_type(type);
        std::vector<std::vector<std::byte>> xs;
        std::vector<const void*> rows;
        for (int t = 0; t < cpu::kMaxDotTokens; ++t) {
            const auto x = test::random_floats(rng, size_t(k));
            xs.emplace_back(size_t(row_bytes(act, k)));
            cpu::quantize_activation(act, x.data(), xs.back().data(), k);
        }
        for (const auto& x : xs)
            rows.push_back(x.data());
        for (CpuIsa isa : runnable_isas()) {
            const auto& kernels = cpu::vec_dot_kernels_for(isa);
            for (int n = 1; n <= cpu::kMaxDotTokens; ++n) {
                float out[cpu::kMaxDotTokens];
                cpu::row_dot_n(kernels, type)(wq.data(), rows.data(), n, k, out);
                for (int t = 0; t < n; ++t) {
                    const float single = cpu::row_dot(kernels, type)(wq.data(), rows[size_t(t)], k);
                    EXPECT_NEAR(out[t], single, 1e-5f * (1.0f + std::fabs(single)))
                        << dtype_name(type) << " isa " << cpu::isa_name(isa) << " n " << n
                        << " token " << t;
                }
            }
        }
    }
}

// The several-rows-per-pass kernels (one activation row, decode) give what one dot per row gives
// and what float64 gives over the dequantized weights and activation: every weight type and ISA
// that has one, one super-block and many, every row count up to the tile, rows not adjacent.
TEST(Quant, MultiRowDotsEqualSingleDotsAndFloat64) {
    TANDEM_SEEDED(seed);
    std::mt19937_64 rng(seed);
    const DType types[] = {DType::F32,  DType::F16,  DType::BF16, DType::Q8_0, DType::Q4_0,
                           DType::Q5_0, DType::Q4_K, DType::Q5_K, DType::Q6_K, DType::MXFP4};
    if (cpu::detected_isa() == CpuIsa::Avx512) {  // where the Q4_K one must exist
        ASSERT_NE(cpu::row_dot_rows(cpu::vec_dot_kernels_for(CpuIsa::Avx512), DType::Q4_K),
                  nullptr);
    }
    int tested = 0;
    for (int64_t k : {int64_t(256), int64_t(256 * 11)}) {
        const int64_t n_rows = cpu::kMaxDotRows + 3;
        const auto w = test::random_floats(rng, size_t(n_rows * k));
        const auto x = test::random_floats(rng, size_t(k));
        for (DType type : types) {
            std::vector<std::byte> wq(size_t(n_rows * row_bytes(type, k)));
            std::vector<float> wd(w.size());
            if (is_quantized_weight_type(type)) {
                wq = quantize(type, w, n_rows, k);
                wd = dequantize(type, wq, n_rows, k);
            } else {
                for (size_t i = 0; i < w.size(); ++i) {
                    if (type == DType::F32) reinterpret_cast<float*>(wq.data())[i] = w[i];
                    if (type == DType::BF16)
                        reinterpret_cast<uint16_t*>(wq.data())[i] = f32_to_bf16(w[i]);
                    if (type == DType::F16)
                        reinterpret_cast<uint16_t*>(wq.data())[i] = f32_to_f16(w[i]);
                }
                for (size_t i = 0; i < w.size(); ++i)
                    wd[i] = type == DType::BF16  ? bf16_to_f32(f32_to_bf16(w[i]))
                            : type == DType::F16 ? f16_to_f32(f32_to_f16(w[i]))
                                                 : w[i];
            }
            const DType act = cpu::vec_dot_type(type);
            std::vector<std::byte> xq(size_t(row_bytes(act, k)));
            cpu::quantize_activation(act, x.data(), xq.data(), k);
            const auto xd = act == DType::F32 ? x : dequantize(act, xq, 1, k);
            const int64_t stride = row_bytes(type, k);
            for (CpuIsa isa : runnable_isas()) {
                const auto& kernels = cpu::vec_dot_kernels_for(isa);
                const cpu::RowsDotFn dot_rows = cpu::row_dot_rows(kernels, type);
                if (!dot_rows) continue;
                ++tested;
                for (int n = 1; n <= cpu::kMaxDotRows; ++n) {
                    // Rows n - 1, n, ..., then wrapping: a tile need not be contiguous rows.
                    const void* rows[cpu::kMaxDotRows];
                    int64_t row_ids[cpu::kMaxDotRows];
                    for (int j = 0; j < n; ++j) {
                        row_ids[j] = (n - 1 + 2 * j) % n_rows;
                        rows[j] = wq.data() + row_ids[j] * stride;
                    }
                    float out[cpu::kMaxDotRows + 1];
                    out[n] = 12345.0f;  // sentinel past the last row
                    dot_rows(rows, n, xq.data(), k, out);
                    EXPECT_EQ(out[n], 12345.0f) << dtype_name(type) << " wrote past row " << n;
                    for (int j = 0; j < n; ++j) {
                        const float single = cpu::row_dot(kernels, type)(rows[j], xq.data(), k);
                        double want = 0, scale = 0;
                        for (int64_t i = 0; i < k; ++i) {
                            const double p = double(wd[size_t(row_ids[j] * k + i)]) * xd[size_t(i)];
                            want += p;
                            scale += std::fabs(p);
                        }
                        const auto where = ::testing::Message()
                                           << dtype_name(type) << " isa " << cpu::isa_name(isa)
                                           << " k " << k << " rows " << n << " row " << j;
                        // Against the one-row dot, the bound of float rounding too: at avx2
                        // the Q4_K kernels add in different orders, and a sum that cancels
                        // to a small result keeps the rounding of its terms.
                        EXPECT_NEAR(out[j], single, 1e-5 * scale + 1e-6) << where;
                        EXPECT_NEAR(out[j], want, 1e-5 * scale + 1e-6) << where;
                    }
                }
            }
        }
    }
    if (tested == 0) GTEST_SKIP() << "no several-row dot on this CPU's instruction sets";
}

TEST(Quant, FloatDotsOfEveryIsaMatchFloat64) {
    TANDEM_SEEDED(seed);
    std::mt19937_64 rng(seed);
    for (int64_t k : {1, 7, 64, 1001}) {
        const auto w = test::random_floats(rng, size_t(k)), x = test::random_floats(rng, size_t(k));
        std::vector<uint16_t> wb(static_cast<size_t>(k)), wh(static_cast<size_t>(k));
        double want_f = 0, want_b = 0, want_h = 0, scale = 0;
        for (int64_t i = 0; i < k; ++i) {
            wb[size_t(i)] = f32_to_bf16(w[size_t(i)]);
            wh[size_t(i)] = f32_to_f16(w[size_t(i)]);
            want_f += double(w[size_t(i)]) * x[size_t(i)];
            want_b += double(bf16_to_f32(wb[size_t(i)])) * x[size_t(i)];
            want_h += double(f16_to_f32(wh[size_t(i)])) * x[size_t(i)];
            scale += std::fabs(double(w[size_t(i)]) * x[size_t(i)]);
        }
        for (CpuIsa isa : runnable_isas()) {
            const auto& kernels = cpu::vec_dot_kernels_for(isa);
            EXPECT_NEAR(kernels.dot_f32(w.data(), x.data(), k), want_f, 1e-5 * scale + 1e-6)
                << cpu::isa_name(isa);
            EXPECT_NEAR(kernels.dot_bf16(wb.data(), x.data(), k), want_b, 1e-5 * scale + 1e-6)
                << cpu::isa_name(isa);
            EXPECT_NEAR(kernels.dot_f16(wh.data(), x.data(), k), want_h, 1e-5 * scale + 1e-6)
                << cpu::isa_name(isa);
        }
    }
}

ThreadPool& pool() {
    static ThreadPool instance({.n_threads = 3, .pin = false});
    return instance;
}

// linear() with quantized weights, on every ISA, against float64 over the dequantized weights
// and the activations as the kernel quantizes them. The dot products only: the tile path, which
// rounds activations to bf16 instead, has its own tests (test_tile_gemm.cpp).
TEST(Quant, LinearWithQuantizedWeightsOnEveryIsa) {
    IsaGuard guard;
    cpu::set_tile_gemm_policy(cpu::TileGemmPolicy::Never);
    struct RestorePolicy {
        ~RestorePolicy() { cpu::set_tile_gemm_policy(cpu::TileGemmPolicy::Auto); }
    } restore;
    TANDEM_SEEDED(seed);
    std::mt19937_64 rng(seed);
    for (DType type : kWeightTypes) {
        for (auto [n, m] : {std::pair{1, 37}, {3, 64}, {9, 19}}) {
            const int64_t k = 512;
            const auto w = test::random_floats(rng, size_t(m * k)),
                       x = test::random_floats(rng, size_t(n * k));
            auto wq = quantize(type, w, m, k);
            const auto wd = dequantize(type, wq, m, k);
            const DType act = cpu::vec_dot_type(type);
            const auto xd = dequantize(act, quantize(act, x, n, k), n, k);
            const Tensor wt(wq.data(), type, {m, k});
            std::vector<float> xs = x;
            const Tensor xt(xs.data(), DType::F32, {n, k});
            for (CpuIsa isa : runnable_isas()) {
                cpu::force_isa(isa);
                std::vector<float> y(size_t(n * m), NAN);
                cpu::linear(xt, wt, Tensor(), Tensor(y.data(), DType::F32, {n, m}), pool());
                for (int t = 0; t < n; ++t)
                    for (int r = 0; r < m; ++r) {
                        double want = 0, scale = 0;
                        for (int64_t i = 0; i < k; ++i) {
                            want += double(wd[size_t(r * k + i)]) * xd[size_t(t * k + i)];
                            scale +=
                                std::fabs(double(wd[size_t(r * k + i)]) * xd[size_t(t * k + i)]);
                        }
                        ASSERT_NEAR(y[size_t(t * m + r)], want, 1e-5 * scale + 1e-6)
                            << dtype_name(type) << " isa " << cpu::isa_name(isa) << " token " << t
                            << " row " << r;
                    }
            }
        }
    }
}

// The fused MoE kernel with quantized experts: same result on every ISA and for every routing
// shape (one token, an idle expert, all tokens on one expert, a skipped expert), compared with
// a float64 reference that applies the kernel's own activation quantization.
TEST(Quant, FusedMoeKernelOnEveryIsa) {
    IsaGuard guard;
    TANDEM_SEEDED(seed);
    std::mt19937_64 rng(seed);
    const int64_t hidden = 256, ffn = 512, n_experts = 4;
    for (DType type : {DType::Q8_0, DType::Q4_K, DType::Q6_K, DType::MXFP4}) {
        std::vector<std::vector<std::byte>> storage;
        std::vector<std::vector<float>> deq;
        std::vector<cpu::ExpertWeights> experts;
        for (int64_t e = 0; e < n_experts; ++e) {
            for (auto [rows, cols] : {std::pair{ffn, hidden}, {ffn, hidden}, {hidden, ffn}}) {
                storage.push_back(quantize(
                    type, test::random_floats(rng, size_t(rows * cols), 0.2f), rows, cols));
                deq.push_back(dequantize(type, storage.back(), rows, cols));
            }
            experts.push_back({Tensor(storage[size_t(3 * e)].data(), type, {ffn, hidden}),
                               Tensor(storage[size_t(3 * e + 1)].data(), type, {ffn, hidden}),
                               Tensor(storage[size_t(3 * e + 2)].data(), type, {hidden, ffn})});
        }
        struct Routing {
            int64_t n_tokens;
            std::vector<int32_t> offsets, tokens;
            std::vector<uint8_t> skip;
        };
        const std::vector<Routing> routings = {
            {1, {0, 1, 1, 2, 2}, {0, 0}, {}},                         // one token, two experts
            {4, {0, 0, 4, 4, 4}, {0, 1, 2, 3}, {}},                   // all tokens on expert 1
            {3, {0, 2, 2, 4, 6}, {0, 2, 0, 1, 1, 2}, {0, 0, 0, 1}}};  // idle expert 1, skip 3
        for (const Routing& r : routings) {
            const auto x = test::random_floats(rng, size_t(r.n_tokens * hidden));
            std::vector<float> weights(r.tokens.size());
            for (float& w : weights)
                w = std::uniform_real_distribution<float>(0.1f, 1.0f)(rng);
            // Reference: float64 over dequantized weights and activations quantized as the kernel
            // does.
            const DType act = cpu::vec_dot_type(type);
            const auto xd =
                dequantize(act, quantize(act, x, r.n_tokens, hidden), r.n_tokens, hidden);
            std::vector<double> want(size_t(r.n_tokens * hidden), 0.0);
            for (int64_t e = 0; e < n_experts; ++e) {
                if (!r.skip.empty() && r.skip[size_t(e)]) continue;
                for (int32_t s = r.offsets[size_t(e)]; s < r.offsets[size_t(e + 1)]; ++s) {
                    const int32_t t = r.tokens[size_t(s)];
                    std::vector<float> a(static_cast<size_t>(ffn));
                    for (int64_t f = 0; f < ffn; ++f) {
                        double g = 0, u = 0;
                        for (int64_t i = 0; i < hidden; ++i) {
                            g += deq[size_t(3 * e)][size_t(f * hidden + i)] *
                                 double(xd[size_t(t * hidden + i)]);
                            u += deq[size_t(3 * e + 1)][size_t(f * hidden + i)] *
                                 double(xd[size_t(t * hidden + i)]);
                        }
                        a[size_t(f)] = float(g / (1 + std::exp(-g)) * u);
                    }
                    const auto ad = dequantize(act, quantize(act, a, 1, ffn), 1, ffn);
                    for (int64_t i = 0; i < hidden; ++i) {
                        double d = 0;
                        for (int64_t f = 0; f < ffn; ++f)
                            d +=
                                deq[size_t(3 * e + 2)][size_t(i * ffn + f)] * double(ad[size_t(f)]);
                        want[size_t(t * hidden + i)] += weights[size_t(s)] * d;
                    }
                }
            }
            double scale = 0;
            for (double v : want)
                scale = std::max(scale, std::fabs(v));
            for (CpuIsa isa : runnable_isas()) {
                cpu::force_isa(isa);
                std::vector<float> xs = x, out(size_t(r.n_tokens * hidden), 0.0f);
                cpu::moe_experts({.x = Tensor(xs.data(), DType::F32, {r.n_tokens, hidden}),
                                  .out = Tensor(out.data(), DType::F32, {r.n_tokens, hidden}),
                                  .experts = experts,
                                  .offsets = r.offsets,
                                  .token_index = r.tokens,
                                  .token_weight = weights,
                                  .skip = r.skip},
                                 pool());
                // Requantizing the intermediate can flip a rounding in rare elements: compare
                // against the scale of the output.
                for (size_t i = 0; i < out.size(); ++i)
                    ASSERT_NEAR(out[i], want[i], 2e-3 * scale)
                        << dtype_name(type) << " isa " << cpu::isa_name(isa) << " element " << i;
            }
        }
    }
}

TEST(Quant, ForcingAnUnsupportedIsaFails) {
    IsaGuard guard;
    if (cpu::detected_isa() == CpuIsa::Avx512) GTEST_SKIP() << "this CPU runs every level";
    EXPECT_THROW(cpu::force_isa(CpuIsa::Avx512), Error);
}

// Bit-exactness against gguf-py: its quantization of Q8_0, Q4_0 and Q5_0 and its dequantization of
// every type, on fixtures written by tools/make_quant_fixtures.py.
TEST(Quant, MatchesGgufPyBitForBit) {
    const std::string dir = test::data_dir() + "/quant";
    std::ifstream index_file(dir + "/index.json");
    ASSERT_TRUE(index_file) << "missing " << dir << "/index.json";
    const nlohmann::json index = nlohmann::json::parse(index_file);
    auto read = [&](const std::string& name) {
        std::ifstream in(dir + "/" + name, std::ios::binary);
        return std::vector<char>(std::istreambuf_iterator<char>(in), {});
    };
    for (const auto& c : index["cases"]) {
        const DType type = *dtype_from_name(c["type"].get<std::string>());
        const int64_t n = c["n"].get<int64_t>();
        const std::vector<char> input = read(c["input"]), quantized = read(c["quantized"]),
                                dequantized = read(c["dequantized"]);
        ASSERT_EQ(int64_t(quantized.size()), row_bytes(type, n));
        if (c["check_quantize"].get<bool>()) {
            std::vector<std::byte> ours(quantized.size());
            cpu::quantize_row(type, reinterpret_cast<const float*>(input.data()), ours.data(), n);
            EXPECT_EQ(std::memcmp(ours.data(), quantized.data(), ours.size()), 0)
                << "quantize " << c["type"];
        }
        std::vector<float> ours(static_cast<size_t>(n));
        cpu::dequantize_row(type, quantized.data(), ours.data(), n);
        EXPECT_EQ(std::memcmp(ours.data(), dequantized.data(), dequantized.size()), 0)
            << "dequantize " << c["type"];
    }
}

}  // namespace
}  // namespace tandem

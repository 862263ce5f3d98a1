// CPU twins of the CUDA weight kernels (kernels/cuda/quant_blocks.h, host_device.h), compiled by
// g++ and run on every commit, GPU or not: every weight type's chunk dequantization equals
// cpu::dequantize_row bit for bit on freshly quantized random rows; the f16/bf16 bit conversions
// equal tandem's over all 65536 patterns; the GEMV kernel's dot order (lane chunks, then the warp
// butterfly) stays within its rounding bound of float64; the quantized GEMV's 8-bit activations
// (quantize_q8_block) are within half a step of x, its integer chunk dots (unpack_chunk,
// chunk_dot_q8) within a few f32 roundings of float64 of the dequantized operands, and its row
// order (emulate_warp_row_dot_q8) within the GPU test's tolerances on that test's shapes.
//
// Not compared with cpu's vec_dot: the activation formats differ (the CPU's Q8_0 has an f16
// scale, its Q8_K one f32 scale per 256 values; the GPU's blocks have an f32 scale per 32), so
// the two round x differently and neither is the other's reference; float64 is both's.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/cpu/quant.h"
#include "kernels/cuda/host_device.h"
#include "kernels/cuda/quant_blocks.h"
#include "kernels/cuda/quant_dot.h"
#include "kernels/dtype.h"
#include "tests/test_util.h"

namespace tandem {
namespace {

// One row of k elements of `type` holding x (quantized, or converted for float types).
std::vector<uint8_t> encode_row(DType type, const std::vector<float>& x) {
    const int64_t k = int64_t(x.size());
    std::vector<uint8_t> row(size_t(row_bytes(type, k)));
    switch (type) {
        case DType::F32: std::memcpy(row.data(), x.data(), row.size()); break;
        case DType::F16:
        case DType::BF16:
            for (int64_t i = 0; i < k; ++i) {
                const uint16_t bits =
                    type == DType::F16 ? f32_to_f16(x[size_t(i)]) : f32_to_bf16(x[size_t(i)]);
                std::memcpy(row.data() + 2 * i, &bits, 2);
            }
            break;
        default: cpu::quantize_row(type, x.data(), row.data(), k);
    }
    return row;
}

// The CPU reference values of a row.
std::vector<float> reference_row(DType type, const std::vector<uint8_t>& row, int64_t k) {
    std::vector<float> out(static_cast<size_t>(k));
    for (int64_t i = 0; i < k; ++i) {
        uint16_t bits;
        switch (type) {
            case DType::F32: std::memcpy(&out[size_t(i)], row.data() + 4 * i, 4); break;
            case DType::F16:
                std::memcpy(&bits, row.data() + 2 * i, 2);
                out[size_t(i)] = f16_to_f32(bits);
                break;
            case DType::BF16:
                std::memcpy(&bits, row.data() + 2 * i, 2);
                out[size_t(i)] = bf16_to_f32(bits);
                break;
            default: break;
        }
    }
    if (is_quantized_weight_type(type)) cpu::dequantize_row(type, row.data(), out.data(), k);
    return out;
}

template <DType T>
std::vector<float> chunks_of_row(const std::vector<uint8_t>& row, int64_t k) {
    std::vector<float> out(static_cast<size_t>(k));
    for (int64_t c = 0; c < k / cuda::kChunk; ++c)
        cuda::dequant_chunk<T>(row.data(), c, out.data() + c * cuda::kChunk);
    return out;
}

std::vector<float> gpu_dequant(DType type, const std::vector<uint8_t>& row, int64_t k) {
    switch (type) {
        case DType::F32: return chunks_of_row<DType::F32>(row, k);
        case DType::F16: return chunks_of_row<DType::F16>(row, k);
        case DType::BF16: return chunks_of_row<DType::BF16>(row, k);
        case DType::Q8_0: return chunks_of_row<DType::Q8_0>(row, k);
        case DType::Q4_0: return chunks_of_row<DType::Q4_0>(row, k);
        case DType::Q5_0: return chunks_of_row<DType::Q5_0>(row, k);
        case DType::Q4_K: return chunks_of_row<DType::Q4_K>(row, k);
        case DType::Q5_K: return chunks_of_row<DType::Q5_K>(row, k);
        case DType::Q6_K: return chunks_of_row<DType::Q6_K>(row, k);
        case DType::MXFP4: return chunks_of_row<DType::MXFP4>(row, k);
        default: ADD_FAILURE() << "no chunk dequantizer for " << dtype_name(type); return {};
    }
}

float gpu_row_dot(DType type, const std::vector<uint8_t>& row, int64_t k, const float* x) {
    switch (type) {
        case DType::F32: return cuda::emulate_warp_row_dot<DType::F32>(row.data(), k, x);
        case DType::F16: return cuda::emulate_warp_row_dot<DType::F16>(row.data(), k, x);
        case DType::BF16: return cuda::emulate_warp_row_dot<DType::BF16>(row.data(), k, x);
        case DType::Q8_0: return cuda::emulate_warp_row_dot<DType::Q8_0>(row.data(), k, x);
        case DType::Q4_0: return cuda::emulate_warp_row_dot<DType::Q4_0>(row.data(), k, x);
        case DType::Q5_0: return cuda::emulate_warp_row_dot<DType::Q5_0>(row.data(), k, x);
        case DType::Q4_K: return cuda::emulate_warp_row_dot<DType::Q4_K>(row.data(), k, x);
        case DType::Q5_K: return cuda::emulate_warp_row_dot<DType::Q5_K>(row.data(), k, x);
        case DType::Q6_K: return cuda::emulate_warp_row_dot<DType::Q6_K>(row.data(), k, x);
        case DType::MXFP4: return cuda::emulate_warp_row_dot<DType::MXFP4>(row.data(), k, x);
        default: ADD_FAILURE() << "no row dot for " << dtype_name(type); return 0;
    }
}

const DType kTypes[] = {DType::F32,  DType::F16,  DType::BF16, DType::Q8_0, DType::Q4_0,
                        DType::Q5_0, DType::Q4_K, DType::Q5_K, DType::Q6_K, DType::MXFP4};

TEST(CudaQuantTwins, ChunkDequantizationEqualsTheCpuReferenceExactly) {
    TANDEM_SEEDED(seed);
    std::mt19937_64 rng(seed);
    const int64_t k = 256 * 5;  // five super-blocks, forty 32-blocks
    for (DType type : kTypes) {
        for (int trial = 0; trial < 8; ++trial) {
            // Scales from tiny to large so subnormal and large f16 scales occur too.
            const float scale = std::ldexp(1.0f, int(rng() % 24) - 16);
            const std::vector<uint8_t> row = encode_row(type, test::random_floats(rng, k, scale));
            const std::vector<float> want = reference_row(type, row, k);
            const std::vector<float> got = gpu_dequant(type, row, k);
            ASSERT_EQ(got.size(), want.size());
            for (int64_t i = 0; i < k; ++i) {
                uint32_t a, b;
                std::memcpy(&a, &got[size_t(i)], 4);
                std::memcpy(&b, &want[size_t(i)], 4);
                ASSERT_EQ(a, b) << dtype_name(type) << " element " << i << " of " << k << ": got "
                                << got[size_t(i)] << ", cpu " << want[size_t(i)] << " (trial "
                                << trial << ", scale " << scale << ")";
            }
        }
    }
}

// Every e8m0 exponent and every nibble: the scale and the doubled values the GPU computes without
// tables are the CPU's.
TEST(CudaQuantTwins, Mxfp4ScalesAndValuesEqualTheCpusForEveryCode) {
    for (int e = 0; e < 256; ++e)
        ASSERT_EQ(cuda::f32_to_bits(cuda::mxfp4_half_scale(uint8_t(e))),
                  cuda::f32_to_bits(cpu::mxfp4_half_scale(uint8_t(e))))
            << "e8m0 " << e;
    for (uint32_t n = 0; n < 16; ++n)
        ASSERT_EQ(cuda::mxfp4_doubled(n), int(cpu::kMxfp4Doubled[n])) << "nibble " << n;
    for (uint32_t word : {0x00000000u, 0x0F0F0F0Fu, 0x01020304u, 0x080A0C0Eu, 0x07050301u}) {
        const uint32_t bytes = cuda::mxfp4_doubled_bytes(word);
        for (int i = 0; i < 4; ++i)
            ASSERT_EQ(int(int8_t(uint8_t(bytes >> (8 * i)))),
                      int(cpu::kMxfp4Doubled[(word >> (8 * i)) & 0xF]))
                << std::hex << word << " byte " << i;
    }
}

TEST(CudaQuantTwins, HalfConversionsEqualTandemsOverEveryBitPattern) {
    for (uint32_t bits = 0; bits < 65536; ++bits) {
        const uint16_t h = uint16_t(bits);
        const float a = cuda::f16_bits_to_f32(h), b = f16_to_f32(h);
        ASSERT_EQ(cuda::f32_to_bits(a), cuda::f32_to_bits(b)) << "f16 bits 0x" << std::hex << bits;
        const float c = cuda::bf16_bits_to_f32(h), d = bf16_to_f32(h);
        ASSERT_EQ(cuda::f32_to_bits(c), cuda::f32_to_bits(d)) << "bf16 bits 0x" << std::hex << bits;
        // Round trip through f32 to bf16 keeps the bits (NaN payloads aside: quieted as tandem's).
        ASSERT_EQ(cuda::f32_to_bf16_bits(c), f32_to_bf16(c)) << "bf16 bits 0x" << std::hex << bits;
    }
}

TEST(CudaQuantTwins, Bf16RoundingEqualsTandemsOnRandomFloats) {
    TANDEM_SEEDED(seed);
    std::mt19937_64 rng(seed);
    for (int i = 0; i < 1 << 20; ++i) {
        const uint32_t bits = uint32_t(rng());
        const float v = cuda::bits_to_f32(bits);
        ASSERT_EQ(cuda::f32_to_bf16_bits(v), f32_to_bf16(v)) << "f32 bits 0x" << std::hex << bits;
    }
}

// The GEMV kernel's order (32 lane partials of chunk FMAs, then the butterfly) against float64 of
// the same dequantized weights: the error of a sum of k products in f32 is at most about
// (k / 32 + 5) ulp-steps of the absolute sum; 2 * that * 2^-24 * sum |w x| bounds it generously.
TEST(CudaQuantTwins, WarpDotOrderIsWithinF32RoundingOfFloat64) {
    TANDEM_SEEDED(seed);
    std::mt19937_64 rng(seed);
    for (int64_t k : {256, 1024, 2816, 14336}) {
        for (DType type : kTypes) {
            const std::vector<uint8_t> row = encode_row(type, test::random_floats(rng, size_t(k)));
            const std::vector<float> w = reference_row(type, row, k);
            const std::vector<float> x = test::random_floats(rng, size_t(k));
            double exact = 0, magnitude = 0;
            for (int64_t i = 0; i < k; ++i) {
                exact += double(w[size_t(i)]) * x[size_t(i)];
                magnitude += std::abs(double(w[size_t(i)]) * x[size_t(i)]);
            }
            const float got = gpu_row_dot(type, row, k, x.data());
            const double bound = 2.0 * double(k / 32 + 5) * std::ldexp(1.0, -24) * magnitude;
            EXPECT_LE(std::abs(double(got) - exact), bound)
                << dtype_name(type) << " k " << k << ": got " << got << ", float64 " << exact;
        }
    }
}

const DType kQuantTypes[] = {DType::Q8_0, DType::Q4_0, DType::Q5_0, DType::Q4_K,
                             DType::Q5_K, DType::Q6_K, DType::MXFP4};

// x quantized block by block as the GPU's quantize kernel does.
struct QuantizedX {
    std::vector<int8_t> q;
    std::vector<float> d;  // one per 32 values
};
QuantizedX quantize_x(const std::vector<float>& x) {
    QuantizedX out{std::vector<int8_t>(x.size()), std::vector<float>(x.size() / cuda::kQ8Block)};
    for (size_t b = 0; b < out.d.size(); ++b)
        out.d[b] = cuda::quantize_q8_block(x.data() + b * cuda::kQ8Block,
                                           out.q.data() + b * cuda::kQ8Block);
    return out;
}

TEST(CudaQuantTwins, Q8ActivationsAreWithinHalfAStepOfX) {
    TANDEM_SEEDED(seed);
    std::mt19937_64 rng(seed);
    for (int trial = 0; trial < 256; ++trial) {
        const float scale = std::ldexp(1.0f, int(rng() % 40) - 20);
        std::vector<float> x = test::random_floats(rng, cuda::kQ8Block, scale);
        if (trial % 16 == 0) x.assign(x.size(), 0.0f);  // an all-zero block: scale 0, quants 0
        const QuantizedX qx = quantize_x(x);
        float amax = 0;
        for (float v : x)
            amax = std::max(amax, std::abs(v));
        ASSERT_EQ(qx.d[0], amax / 127.0f) << "trial " << trial;
        for (int i = 0; i < cuda::kQ8Block; ++i) {
            ASSERT_LE(std::abs(int(qx.q[size_t(i)])), 127);
            // Half a step, plus the rounding of x * (1 / d) before the rounding to an integer.
            const double err = std::abs(double(qx.q[size_t(i)]) * qx.d[0] - x[size_t(i)]);
            ASSERT_LE(err, 0.5 * qx.d[0] * (1 + 1e-5))
                << "element " << i << ": x " << x[size_t(i)] << ", q " << int(qx.q[size_t(i)])
                << ", d " << qx.d[0] << " (trial " << trial << ", scale " << scale << ")";
        }
    }
}

TEST(CudaQuantTwins, BranchFreeK4ScalesEqualScaleMinK4AndSmallIntsConvertExactly) {
    TANDEM_SEEDED(seed);
    std::mt19937_64 rng(seed);
    for (int trial = 0; trial < 4096; ++trial) {
        uint8_t bytes[12];
        for (uint8_t& b : bytes)
            b = uint8_t(rng());
        uint32_t w[3];
        std::memcpy(w, bytes, sizeof w);
        for (int j = 0; j < 8; ++j) {
            int sc, m, sc2, m2;
            cuda::scale_min_k4(j, bytes, sc, m);
            cuda::scale_min_k4_words(j, w[0], w[1], w[2], sc2, m2);
            ASSERT_EQ(sc2, sc) << "sub-block " << j << " (seed " << seed << ")";
            ASSERT_EQ(m2, m) << "sub-block " << j << " (seed " << seed << ")";
        }
    }
    for (int32_t v = -(1 << 22) + 1; v < (1 << 22); v += 7)
        ASSERT_EQ(cuda::small_int_to_f32(v), float(v)) << v;
}

// Σ over a chunk of |w_i x_i| with w split into its terms, |d (q_i - offset)| + |m|: what the
// f32 roundings of the chunk's terms are relative to.
template <DType T>
double chunk_magnitude(const cuda::WeightChunk& w, const int8_t* xq, float dx) {
    double sum = 0;
    for (int i = 0; i < cuda::kChunk; ++i) {
        const uint32_t word = i < 4 ? w.q0 : w.q1;
        const uint8_t byte = uint8_t(word >> (8 * (i % 4)));
        const int q = T == DType::Q8_0 || T == DType::MXFP4 ? int(int8_t(byte))
                                                            : int(byte) - cuda::kQuantOffset<T>;
        sum += (std::abs(double(w.d) * q) + std::abs(double(w.m))) * std::abs(double(xq[i]) * dx);
    }
    return sum;
}

template <DType T>
void check_chunk_dots(const std::vector<uint8_t>& row, int64_t k, const QuantizedX& x,
                      uint64_t seed) {
    for (int64_t c = 0; c < k / cuda::kChunk; ++c) {
        float w[cuda::kChunk];
        cuda::dequant_chunk<T>(row.data(), c, w);
        const int8_t* xq = x.q.data() + c * cuda::kChunk;
        const float dx = x.d[size_t(c * cuda::kChunk / cuda::kQ8Block)];
        double want = 0;
        for (int i = 0; i < cuda::kChunk; ++i)
            want += double(w[i]) * (double(xq[i]) * dx);
        uint32_t x0, x1;
        std::memcpy(&x0, xq, 4);
        std::memcpy(&x1, xq + 4, 4);
        const cuda::WeightChunk wc = cuda::unpack_chunk<T>(row.data(), c);
        const float got = cuda::chunk_dot_q8<T>(wc, x0, x1, dx, 0.0f);
        // The scale products, the FMAs and the dequantized reference's own roundings: a few
        // 2^-24 of the terms' magnitude; a wrong quant or scale is off by whole terms.
        const double bound = 8 * std::ldexp(1.0, -24) * chunk_magnitude<T>(wc, xq, dx);
        ASSERT_LE(std::abs(double(got) - want), bound)
            << dtype_name(T) << " chunk " << c << " of a row of " << k << ": got " << got
            << ", float64 " << want << " (seed " << seed << ")";
    }
}

TEST(CudaQuantTwins, IntegerChunkDotsMatchFloat64OfTheDequantizedOperands) {
    TANDEM_SEEDED(seed);
    std::mt19937_64 rng(seed);
    const int64_t k = 256 * 5;
    for (DType type : kQuantTypes)
        for (int trial = 0; trial < 8; ++trial) {
            const float scale = std::ldexp(1.0f, int(rng() % 24) - 12);
            const std::vector<uint8_t> row = encode_row(type, test::random_floats(rng, k, scale));
            const QuantizedX x = quantize_x(test::random_floats(rng, k, 1.0f / scale));
            switch (type) {
                case DType::Q8_0: check_chunk_dots<DType::Q8_0>(row, k, x, seed); break;
                case DType::Q4_0: check_chunk_dots<DType::Q4_0>(row, k, x, seed); break;
                case DType::Q5_0: check_chunk_dots<DType::Q5_0>(row, k, x, seed); break;
                case DType::Q4_K: check_chunk_dots<DType::Q4_K>(row, k, x, seed); break;
                case DType::Q5_K: check_chunk_dots<DType::Q5_K>(row, k, x, seed); break;
                case DType::Q6_K: check_chunk_dots<DType::Q6_K>(row, k, x, seed); break;
                case DType::MXFP4: check_chunk_dots<DType::MXFP4>(row, k, x, seed); break;
                default: break;
            }
            if (HasFatalFailure()) return;
        }
}

float q8_row_dot(DType type, const std::vector<uint8_t>& row, int64_t k, const QuantizedX& x) {
    const int8_t* q = x.q.data();
    const float* d = x.d.data();
    switch (type) {
        case DType::Q8_0: return cuda::emulate_warp_row_dot_q8<DType::Q8_0>(row.data(), k, q, d);
        case DType::Q4_0: return cuda::emulate_warp_row_dot_q8<DType::Q4_0>(row.data(), k, q, d);
        case DType::Q5_0: return cuda::emulate_warp_row_dot_q8<DType::Q5_0>(row.data(), k, q, d);
        case DType::Q4_K: return cuda::emulate_warp_row_dot_q8<DType::Q4_K>(row.data(), k, q, d);
        case DType::Q5_K: return cuda::emulate_warp_row_dot_q8<DType::Q5_K>(row.data(), k, q, d);
        case DType::Q6_K: return cuda::emulate_warp_row_dot_q8<DType::Q6_K>(row.data(), k, q, d);
        case DType::MXFP4: return cuda::emulate_warp_row_dot_q8<DType::MXFP4>(row.data(), k, q, d);
        default: ADD_FAILURE() << "no 8-bit row dot for " << dtype_name(type); return 0;
    }
}

// The quantized GEMV's whole row (lane partials of chunk_dot_q8, the butterfly) on the shapes of
// test_cuda_linear's GEMV cases, normalised as there (max |error| / max |y| over a matrix):
// against float64 of the dequantized weights times the 8-bit activations (the GPU test's
// 1e-4) and against float64 of the exact x (its 2.5e-2). Prints the worst figures, which the GPU
// test's comments quote.
TEST(CudaQuantTwins, EmulatedQ8GemvIsWithinTheGpuTestsTolerances) {
    TANDEM_SEEDED(seed);
    std::mt19937_64 rng(seed);
    double worst_own = 0, worst_exact = 0;
    for (DType type : kQuantTypes)
        for (int64_t k : {256, 512, 768, 2048}) {
            const int64_t m = 67;
            const std::vector<float> x = test::random_floats(rng, size_t(k));
            const QuantizedX qx = quantize_x(x);
            double max_y = 0, err_own = 0, err_exact = 0;
            for (int64_t r = 0; r < m; ++r) {
                const std::vector<uint8_t> row = encode_row(type, test::random_floats(rng, k));
                const std::vector<float> w = reference_row(type, row, k);
                double own = 0, exact = 0;
                for (int64_t i = 0; i < k; ++i) {
                    own += double(w[size_t(i)]) *
                           (double(qx.q[size_t(i)]) * qx.d[size_t(i / cuda::kQ8Block)]);
                    exact += double(w[size_t(i)]) * x[size_t(i)];
                }
                const double got = q8_row_dot(type, row, k, qx);
                max_y = std::max(max_y, std::abs(exact));
                err_own = std::max(err_own, std::abs(got - own));
                err_exact = std::max(err_exact, std::abs(got - exact));
            }
            EXPECT_LT(err_own / max_y, 1e-4) << dtype_name(type) << " k " << k;
            EXPECT_LT(err_exact / max_y, 2.5e-2) << dtype_name(type) << " k " << k;
            worst_own = std::max(worst_own, err_own / max_y);
            worst_exact = std::max(worst_exact, err_exact / max_y);
        }
    std::printf("8-bit GEMV emulation: worst %.3g vs float64 of its operands, %.3g vs exact x\n",
                worst_own, worst_exact);
}

}  // namespace
}  // namespace tandem

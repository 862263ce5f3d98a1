// CPU twins of the CUDA weight kernels (kernels/cuda/quant_blocks.h, host_device.h), compiled by
// g++ and run on every commit, GPU or not: every weight type's chunk dequantization equals
// cpu::dequantize_row bit for bit on freshly quantized random rows; the f16/bf16 bit conversions
// equal tandem's over all 65536 patterns; the GEMV kernel's dot order (lane chunks, then the warp
// butterfly) stays within its rounding bound of float64.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/cpu/quant.h"
#include "kernels/cuda/host_device.h"
#include "kernels/cuda/quant_blocks.h"
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
        default: ADD_FAILURE() << "no row dot for " << dtype_name(type); return 0;
    }
}

const DType kTypes[] = {DType::F32,  DType::F16,  DType::BF16, DType::Q8_0, DType::Q4_0,
                        DType::Q5_0, DType::Q4_K, DType::Q5_K, DType::Q6_K};

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

}  // namespace
}  // namespace tandem

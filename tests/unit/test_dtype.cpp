// Conversions between f32 and the 16-bit float types, checked against the compiler's own
// _Float16 (an independent implementation) and exhaustively over all 65536 bit patterns.
#include <gtest/gtest.h>

#include <bit>
#include <cfloat>
#include <cmath>
#include <random>

#include "kernels/dtype.h"
#include "tests/test_util.h"

namespace tandem {
namespace {

TEST(DType, F16ToF32MatchesCompilerForEveryBitPattern) {
    for (uint32_t bits = 0; bits < 65536; ++bits) {
        const _Float16 h = std::bit_cast<_Float16>(uint16_t(bits));
        const float expected = float(h);
        const float got = f16_to_f32(uint16_t(bits));
        if (std::isnan(expected)) {
            EXPECT_TRUE(std::isnan(got)) << bits;
        } else {
            ASSERT_EQ(std::bit_cast<uint32_t>(got), std::bit_cast<uint32_t>(expected))
                << "bits " << bits;
        }
    }
}

TEST(DType, F32ToF16RoundsLikeCompiler) {
    TANDEM_SEEDED(seed);
    std::mt19937_64 rng(seed);
    for (int i = 0; i < 2000000; ++i) {
        // Random bit patterns cover subnormals, overflow, NaN and every exponent.
        const float value = std::bit_cast<float>(uint32_t(rng()));
        const uint16_t expected = std::bit_cast<uint16_t>(_Float16(value));
        const uint16_t got = f32_to_f16(value);
        if (std::isnan(value)) {
            EXPECT_TRUE(std::isnan(f16_to_f32(got)));
        } else {
            ASSERT_EQ(got, expected) << "value " << value;
        }
    }
}

TEST(DType, Bf16RoundsToNearestEven) {
    EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
    // 1 + 2^-8 is halfway between two bf16 values: ties go to the even mantissa (down).
    EXPECT_EQ(f32_to_bf16(std::bit_cast<float>(0x3f808000u)), 0x3f80);
    EXPECT_EQ(f32_to_bf16(std::bit_cast<float>(0x3f818000u)), 0x3f82);  // odd: rounds up
    EXPECT_EQ(f32_to_bf16(std::bit_cast<float>(0x3f808001u)), 0x3f81);  // above half: up
    EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(NAN))));
    EXPECT_EQ(bf16_to_f32(f32_to_bf16(INFINITY)), INFINITY);
    TANDEM_SEEDED(seed);
    std::mt19937_64 rng(seed);
    for (int i = 0; i < 100000; ++i) {
        const float v = std::bit_cast<float>(uint32_t(rng()) & 0xbfffffffu);  // finite-ish
        if (!std::isfinite(v) || std::fabs(v) < FLT_MIN) continue;            // normal numbers only
        const float r = bf16_to_f32(f32_to_bf16(v));
        if (!std::isfinite(r)) continue;
        ASSERT_LE(std::fabs(double(r) - double(v)), std::fabs(double(v)) * 0x1.0p-8) << v;
    }
}

TEST(DType, NamesAndSizes) {
    EXPECT_EQ(dtype_from_safetensors("BF16"), DType::BF16);
    EXPECT_EQ(dtype_from_safetensors("F8_E4M3"), std::nullopt);
    EXPECT_EQ(row_bytes(DType::BF16, 10), 20);
    EXPECT_EQ(row_bytes(DType::F32, 3), 12);
    EXPECT_EQ(dtype_name(DType::F16), "f16");
}

}  // namespace
}  // namespace tandem

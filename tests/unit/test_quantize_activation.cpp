// Activation quantization (cpu::quantize_activation through each ISA's VecDotKernels): the
// vectorized Q8_0 and Q8_K quantizers give the reference quantize_row's bytes on every ISA level,
// for random rows at scales from tiny to large, all-zero blocks, and blocks built so that x * id
// lands exactly on half-steps, where Q8_0 rounds away from zero and Q8_K to even.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/cpu/quant.h"
#include "kernels/cpu/vec_dot.h"
#include "tests/test_util.h"

namespace tandem {
namespace {

// A row of `blocks` blocks of `block` values: random ones at a random scale, except every third
// block, whose largest |x| is 127 (so Q8_0's id and Q8_K's iscale are 1) and whose other values
// sit on half-steps (k + 0.5 for k in -126..126), and every seventh block, which is zero.
std::vector<float> test_row(std::mt19937_64& rng, int64_t blocks, int64_t block) {
    std::vector<float> x;
    for (int64_t b = 0; b < blocks; ++b) {
        if (b % 7 == 6) {
            x.insert(x.end(), size_t(block), 0.0f);
        } else if (b % 3 == 2) {
            for (int64_t i = 0; i < block; ++i)
                x.push_back(i == 0 ? 127.0f : float(int64_t(rng() % 253) - 126) + 0.5f);
        } else {
            const float scale = std::ldexp(1.0f, int(rng() % 40) - 20);
            const std::vector<float> r = test::random_floats(rng, size_t(block), scale);
            x.insert(x.end(), r.begin(), r.end());
        }
    }
    return x;
}

TEST(QuantizeActivation, EveryIsaGivesTheReferenceBytes) {
    TANDEM_SEEDED(seed);
    std::mt19937_64 rng(seed);
    struct Format {
        DType type;
        int64_t block;
        void (*cpu::VecDotKernels::*fn)(const float*, void*, int64_t);
    };
    const Format formats[] = {{DType::Q8_0, cpu::kQK, &cpu::VecDotKernels::quantize_q8_0},
                              {DType::Q8_K, cpu::kQKK, &cpu::VecDotKernels::quantize_q8_k}};
    for (const Format& f : formats)
        for (int64_t blocks : {1, 2, 7, 22}) {
            const std::vector<float> x = test_row(rng, blocks, f.block);
            const int64_t k = int64_t(x.size());
            std::vector<uint8_t> want(size_t(row_bytes(f.type, k)));
            cpu::quantize_row(f.type, x.data(), want.data(), k);
            for (cpu::CpuIsa isa : test::runnable_isas()) {
                std::vector<uint8_t> got(want.size(), 0xA5);
                (cpu::vec_dot_kernels_for(isa).*f.fn)(x.data(), got.data(), k);
                for (size_t i = 0; i < want.size(); ++i)
                    ASSERT_EQ(got[i], want[i])
                        << dtype_name(f.type) << " at " << cpu::isa_name(isa) << ": byte " << i
                        << " of " << want.size() << " (block " << i / (want.size() / blocks)
                        << " of " << blocks << ")";
            }
        }
}

// quantize_activation takes the active ISA's kernels for whole blocks and the reference for the
// rest (f32 is a copy).
TEST(QuantizeActivation, TheEntryPointGivesTheReferenceBytes) {
    TANDEM_SEEDED(seed);
    std::mt19937_64 rng(seed);
    const std::vector<float> x = test_row(rng, 3, cpu::kQKK);
    for (DType type : {DType::Q8_0, DType::Q8_K, DType::F32}) {
        const auto k = int64_t(x.size());
        std::vector<uint8_t> want(size_t(row_bytes(type, k))), got(want.size(), 0xA5);
        if (type == DType::F32)
            std::memcpy(want.data(), x.data(), want.size());
        else
            cpu::quantize_row(type, x.data(), want.data(), k);
        cpu::quantize_activation(type, x.data(), got.data(), k);
        EXPECT_EQ(got, want) << dtype_name(type);
    }
}

}  // namespace
}  // namespace tandem

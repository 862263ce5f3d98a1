// CPU twins of the CUDA kernels' arithmetic (kernels/cuda/*_math.h, host_device.h): the very
// TANDEM_HD functions the kernels run, called here on the host and compared with the CPU kernels
// (cpu::apply_rope, tandem::route, write_rows, KvRows::at, tandem::f32_to_f16) or float64 on
// fresh random inputs. Runs on every CI build, GPU or not; label unit.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "cache/kv_cache.h"
#include "kernels/cpu/rope.h"
#include "kernels/cuda/attention_math.h"
#include "kernels/cuda/host_device.h"
#include "kernels/cuda/rope_math.h"
#include "kernels/cuda/router_math.h"
#include "models/blocks/router.h"
#include "tests/test_util.h"

namespace tandem {
namespace {

using test::random_floats;

TEST(CudaMathTwins, F16ConversionMatchesTheCpu) {
    TANDEM_SEEDED(seed);
    std::mt19937_64 rng(seed);
    // Every magnitude from subnormal halves to overflow, and random bit patterns.
    std::uniform_real_distribution<float> exponent(-30.0f, 17.0f);
    for (int i = 0; i < 200000; ++i) {
        const float v = (i % 2 ? std::exp2(exponent(rng)) : cuda::bits_to_f32(uint32_t(rng()))) *
                        (i % 3 ? 1.0f : -1.0f);
        if (std::isnan(v)) continue;
        ASSERT_EQ(cuda::f32_to_f16_bits(v), f32_to_f16(v)) << "value " << v << " at " << i;
    }
    for (float v : {0.0f, -0.0f, 65504.0f, 65519.0f, 65520.0f, 1e-8f, 2.98023224e-8f, INFINITY})
        EXPECT_EQ(cuda::f32_to_f16_bits(v), f32_to_f16(v)) << v;
}

TEST(CudaMathTwins, RopeMatchesCpuApplyRopeUpTo128kPositions) {
    TANDEM_SEEDED(seed);
    std::mt19937_64 rng(seed);
    for (const auto& [head_dim, rotary_dim] : {std::pair{128, 128}, {64, 32}, {80, 64}}) {
        const int64_t n_tokens = 9, n_heads = 3, half = rotary_dim / 2;
        std::vector<double> inv_freq(static_cast<size_t>(half));
        for (int64_t i = 0; i < half; ++i)
            inv_freq[size_t(i)] = double(1.0f / std::pow(1e6f, float(2 * i) / float(rotary_dim)));
        std::vector<int64_t> positions(static_cast<size_t>(n_tokens));
        std::uniform_int_distribution<int64_t> position(0, 131071);
        for (auto& p : positions)
            p = position(rng);
        positions[0] = 131071;
        const double attention_scale = 1.0 + double(rng() % 3) * 0.1;
        std::vector<float> x = random_floats(rng, size_t(n_tokens * n_heads * head_dim));
        std::vector<float> twin = x;
        cpu::apply_rope(Tensor(x.data(), DType::F32, {n_tokens, n_heads, head_dim}), positions,
                        inv_freq, attention_scale);
        for (int64_t t = 0; t < n_tokens; ++t)
            for (int64_t h = 0; h < n_heads; ++h)
                for (int64_t i = 0; i < half; ++i) {
                    float* v = twin.data() + (t * n_heads + h) * head_dim;
                    cuda::rope_rotate(v[i], v[i + half],
                                      cuda::rope_angle(positions[size_t(t)], inv_freq[size_t(i)],
                                                       attention_scale));
                }
        for (size_t i = 0; i < x.size(); ++i)
            ASSERT_NEAR(twin[i], x[i], 1e-6 * (1.0 + std::fabs(x[i])))
                << "head_dim " << head_dim << " rotary_dim " << rotary_dim << " element " << i;
    }
}

RouterOptions cpu_options(const cuda::RouterParams& p) {
    return {.n_experts_active = p.k,
            .scoring = p.scoring == cuda::RouterScoringKind::Softmax ? RouterScoring::Softmax
                                                                     : RouterScoring::Sigmoid,
            .topk = p.topk == cuda::RouterTopkKind::Greedy ? RouterTopk::Greedy
                    : p.topk == cuda::RouterTopkKind::GroupLimitedGreedy
                        ? RouterTopk::GroupLimitedGreedy
                        : RouterTopk::NoauxTc,
            .n_groups = p.n_groups,
            .topk_groups = p.topk_groups,
            .normalize = p.normalize,
            .scaling = p.scaling};
}

TEST(CudaMathTwins, RouterSelectionMatchesTandemRouteInEveryMode) {
    TANDEM_SEEDED(seed);
    std::mt19937_64 rng(seed);
    using cuda::RouterScoringKind, cuda::RouterTopkKind;
    const std::vector<cuda::RouterParams> modes = {
        {.n_experts = 64, .k = 8, .scoring = RouterScoringKind::Softmax},
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
        {.n_experts = 16,
         .k = 2,
         .scoring = RouterScoringKind::Sigmoid,
         .topk = RouterTopkKind::NoauxTc,
         .n_groups = 4,
         .topk_groups = 1},
    };
    for (const cuda::RouterParams& p : modes) {
        for (const bool with_bias : {false, true}) {
            const int64_t n_tokens = 37;
            std::vector<float> logits = random_floats(rng, size_t(n_tokens * p.n_experts), 2.0f);
            // A few exact ties, which must go to the lower id on both sides.
            logits[3] = logits[5];
            std::vector<float> bias =
                with_bias ? random_floats(rng, size_t(p.n_experts), 0.1f) : std::vector<float>{};
            const Routing want = route(Tensor(logits.data(), DType::F32, {n_tokens, p.n_experts}),
                                       cpu_options(p), bias);
            std::vector<float> scores(size_t(p.n_experts)), choice(size_t(p.n_experts));
            std::vector<int32_t> ids(size_t(p.k));
            std::vector<float> weights(size_t(p.k));
            for (int64_t t = 0; t < n_tokens; ++t) {
                cuda::route_token(p, logits.data() + t * p.n_experts,
                                  with_bias ? bias.data() : nullptr, scores.data(), choice.data(),
                                  ids.data(), weights.data());
                for (int64_t j = 0; j < p.k; ++j) {
                    const size_t w = size_t(t * p.k + j);
                    ASSERT_EQ(ids[size_t(j)], want.experts[w])
                        << "experts " << p.n_experts << " k " << p.k << " topk mode " << int(p.topk)
                        << " bias " << with_bias << " token " << t << " rank " << j;
                    ASSERT_NEAR(weights[size_t(j)], want.weights[w], 1e-6 * p.scaling)
                        << "token " << t << " rank " << j;
                }
            }
        }
    }
}

// One query row's attention, as the kernel computes it: keys in splits, each split an online
// softmax over chunks of 32 in base 2, then combine_partials; against float64.
TEST(CudaMathTwins, SplitOnlineSoftmaxCombineMatchesFloat64) {
    TANDEM_SEEDED(seed);
    std::mt19937_64 rng(seed);
    for (const int64_t n_keys : {1, 17, 255, 4096}) {
        for (const int n_splits : {1, 3, 7}) {
            const int64_t v_dim = 24;
            std::vector<float> scores = random_floats(rng, size_t(n_keys), 3.0f);
            std::vector<float> values = random_floats(rng, size_t(n_keys * v_dim));
            const int64_t stride = cuda::PartialRow::kAcc + v_dim;
            std::vector<float> partial(size_t(n_splits * stride));
            const int64_t per_split = (n_keys + n_splits - 1) / n_splits;
            for (int s = 0; s < n_splits; ++s) {
                float m = -INFINITY, sum = 0.0f;
                std::vector<float> acc(size_t(v_dim), 0.0f);
                const int64_t begin = s * per_split, end = std::min(n_keys, begin + per_split);
                for (int64_t c0 = begin; c0 < end; c0 += 32) {
                    const int64_t c1 = std::min(end, c0 + 32);
                    float chunk_max = -INFINITY;
                    for (int64_t j = c0; j < c1; ++j)
                        chunk_max = std::max(chunk_max, scores[size_t(j)]);
                    const float m_new = std::max(m, chunk_max);
                    const float rescale = cuda::softmax_rescale(m, m_new);
                    sum *= rescale;
                    for (float& a : acc)
                        a *= rescale;
                    for (int64_t j = c0; j < c1; ++j) {
                        const float p = std::exp2(scores[size_t(j)] - m_new);
                        sum += p;
                        for (int64_t d = 0; d < v_dim; ++d)
                            acc[size_t(d)] += p * values[size_t(j * v_dim + d)];
                    }
                    m = m_new;
                }
                float* row = partial.data() + s * stride;
                row[cuda::PartialRow::kMax] = m;  // -inf for an empty split
                row[cuda::PartialRow::kSum] = sum;
                std::copy(acc.begin(), acc.end(), row + cuda::PartialRow::kAcc);
            }
            double max_score = -INFINITY;
            for (float s : scores)
                max_score = std::max(max_score, double(s));
            for (int64_t d = 0; d < v_dim; ++d) {
                double num = 0, den = 0;
                for (int64_t j = 0; j < n_keys; ++j) {
                    const double w = std::exp2(double(scores[size_t(j)]) - max_score);
                    num += w * values[size_t(j * v_dim + d)];
                    den += w;
                }
                const float got = cuda::combine_partials(partial.data(), stride, n_splits, d);
                // f32 sums over up to 4096 terms: ~1e-6 relative, bounded with margin.
                ASSERT_NEAR(got, num / den, 2e-5)
                    << "keys " << n_keys << " splits " << n_splits << " dim " << d;
            }
        }
    }
}

TEST(CudaMathTwins, KvElementMatchesKvRowsAt) {
    TANDEM_SEEDED(seed);
    std::mt19937_64 rng(seed);
    const int64_t block_size = 16, n_blocks = 9, n_heads = 3, head_dim = 40;
    std::vector<int32_t> table(static_cast<size_t>(n_blocks));
    std::iota(table.begin(), table.end(), 0);
    std::shuffle(table.begin(), table.end(), rng);
    std::vector<uint16_t> storage(size_t(n_blocks * n_heads * block_size * head_dim));
    const KvRows rows(storage.data(), table.data(), block_size, n_heads, head_dim,
                      n_blocks * block_size, DType::BF16);
    const cuda::KvView view{.base = rows.base,
                            .block_table = table.data(),
                            .block_size = block_size,
                            .pos_stride = rows.pos_stride,
                            .head_stride = rows.head_stride,
                            .block_stride = rows.block_stride,
                            .kind = cuda::FloatKind::BF16};
    for (int64_t pos = 0; pos < rows.capacity; ++pos)
        for (int64_t h = 0; h < n_heads; ++h)
            ASSERT_EQ(rows.base + cuda::kv_element(view, pos, h) * 2, rows.at(pos, h))
                << "pos " << pos << " head " << h;
}

}  // namespace
}  // namespace tandem

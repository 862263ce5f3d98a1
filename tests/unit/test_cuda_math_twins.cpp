// CPU twins of the CUDA kernels' arithmetic (kernels/cuda/*_math.h, host_device.h, and the
// attention kernel's plan, attention_plan.h): the very
// TANDEM_HD functions the kernels run, called here on the host and compared with the CPU kernels
// (cpu::apply_rope, tandem::route, write_rows, KvRows::at, tandem::f32_to_f16) or float64 on
// fresh random inputs. Runs on every CI build, GPU or not; label unit.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numbers>
#include <numeric>
#include <random>
#include <vector>

#include "cache/kv_cache.h"
#include "kernels/cpu/activation.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/rope.h"
#include "kernels/cuda/attention_math.h"
#include "kernels/cuda/attention_plan.h"
#include "kernels/cuda/glu_math.h"
#include "kernels/cuda/host_device.h"
#include "kernels/cuda/latent_attention.h"
#include "kernels/cuda/mla_math.h"
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

// DeepSeek rotates interleaved pairs (2i, 2i + 1); the GPU de-interleaves with
// mla_rope_source and rotates halves (i, i + n / 2). Both must give the same rotated values, in
// the de-interleaved order: checked against an interleaved rotation in float64.
TEST(CudaMathTwins, MlaRopeSourceTurnsInterleavedPairsIntoRotateHalf) {
    TANDEM_SEEDED(seed);
    std::mt19937_64 rng(seed);
    for (const int64_t rope : {2, 16, 64}) {
        const int64_t half = rope / 2;
        std::vector<double> inv_freq(static_cast<size_t>(half));
        for (int64_t i = 0; i < half; ++i)
            inv_freq[size_t(i)] = std::pow(1e4, -double(2 * i) / double(rope));
        const int64_t position = int64_t(rng() % 65536);
        const std::vector<float> x = random_floats(rng, size_t(rope));
        std::vector<float> permuted(static_cast<size_t>(rope));
        std::vector<bool> used(static_cast<size_t>(rope), false);
        for (int64_t i = 0; i < rope; ++i) {
            const int64_t src = cuda::mla_rope_source(i, rope, true);
            ASSERT_TRUE(src >= 0 && src < rope && !used[size_t(src)]) << "not a permutation";
            used[size_t(src)] = true;
            permuted[size_t(i)] = x[size_t(src)];
            EXPECT_EQ(cuda::mla_rope_source(i, rope, false), i);
        }
        const int64_t positions[] = {position};
        cpu::apply_rope(Tensor(permuted.data(), DType::F32, {1, 1, rope}), positions, inv_freq);
        for (int64_t i = 0; i < half; ++i) {
            const double angle = double(position) * inv_freq[size_t(i)];
            const double a = x[size_t(2 * i)], b = x[size_t(2 * i + 1)];
            EXPECT_NEAR(permuted[size_t(i)], a * std::cos(angle) - b * std::sin(angle), 1e-5);
            EXPECT_NEAR(permuted[size_t(i + half)], a * std::sin(angle) + b * std::cos(angle),
                        1e-5);
        }
    }
}

// The latent attention kernel's split of the key range: splits only when the blocks leave the
// GPU idle, whole chunks per split, and every row's keys [0, position] covered exactly once by
// decode_split_range over the splits (the kernel's own range function).
TEST(CudaMathTwins, LatentSplitsCoverEveryKeyOnce) {
    TANDEM_SEEDED(seed);
    std::mt19937_64 rng(seed);
    for (int trial = 0; trial < 2000; ++trial) {
        const int64_t sms = 1 + int64_t(rng() % 200), blocks = 1 + int64_t(rng() % 600);
        const int64_t max_keys = 1 + int64_t(rng() % (trial % 2 ? 200000 : 3000));
        const int64_t splits = cuda::latent_splits(blocks, max_keys, sms);
        const int64_t split_keys = cuda::latent_split_keys(max_keys, splits);
        SCOPED_TRACE("sms " + std::to_string(sms) + " blocks " + std::to_string(blocks) + " keys " +
                     std::to_string(max_keys));
        ASSERT_GE(splits, 1);
        ASSERT_LE(splits, 65535);  // gridDim.y
        if (blocks >= 2 * sms) {
            ASSERT_EQ(splits, 1);
        }
        if (splits > 1) {
            ASSERT_LE(blocks * (splits - 1), 2 * sms) << "more splits than the GPU needs";
            ASSERT_GE(split_keys, cuda::kLatentMinSplitKeys / 2);
        }
        ASSERT_EQ(split_keys % cuda::kLatentChunkKeys, 0);
        ASSERT_GE(splits * split_keys, max_keys);
        for (const int64_t position : {int64_t(0), max_keys / 2, max_keys - 1}) {
            int64_t next = 0;
            for (int64_t s = 0; s < splits; ++s) {
                const cuda::KeyRange r = cuda::decode_split_range(position, 0, s, split_keys);
                if (r.end == r.begin) continue;
                ASSERT_EQ(r.begin, next) << "split " << s << " at position " << position;
                next = r.end;
            }
            ASSERT_EQ(next, position + 1) << "position " << position;
        }
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
// softmax over chunks of 32 in base 2, then combine_partials; against float64. With and without
// an attention sink (one more denominator term, base 2 here).
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
            const float sink2 = std::normal_distribution<float>(0.0f, 3.0f)(rng);
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
                const float with_sink =
                    cuda::combine_partials(partial.data(), stride, n_splits, d, sink2);
                ASSERT_NEAR(with_sink, num / (den + std::exp2(double(sink2) - max_score)), 2e-5)
                    << "keys " << n_keys << " splits " << n_splits << " dim " << d << " sink "
                    << sink2;
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

ThreadPool& pool() {
    static ThreadPool instance({.n_threads = 2, .pin = false});
    return instance;
}

struct EmulatedSequence {
    cuda::AttentionShape shape;
    const float* q;
    cuda::KvView k, v;
    float scale;
    float* out;
};

// The CUDA attention kernel's algorithm, row by row on the CPU, over plan_attention's tiles:
// each tile's rows walk their key range in chunks of kAttentionChunk with the kernel's masks and
// online softmax, write the output or a partial row, and split groups are combined with
// combine_partials. Checks the plan (every output row covered once, splits and partial indices)
// and the per-row arithmetic; not the lanes and shared memory, which only a GPU runs.
void emulate_cuda_attention(std::span<const EmulatedSequence> seqs, int multiprocessors) {
    std::vector<cuda::AttentionShape> shapes;
    for (const EmulatedSequence& s : seqs)
        shapes.push_back(s.shape);
    const cuda::AttentionPlan plan = cuda::plan_attention(shapes, multiprocessors);
    const int64_t stride = cuda::PartialRow::kAcc + plan.max_v_dim;
    std::vector<float> partials(size_t(plan.n_partials * stride), NAN);
    for (const cuda::AttentionTile& tile : plan.tiles) {
        const EmulatedSequence& s = seqs[size_t(tile.seq)];
        const cuda::AttentionShape& sh = s.shape;
        const float q_scale = s.scale * std::numbers::log2e_v<float>;
        ASSERT_LE(tile.n_pos * tile.n_heads, cuda::kAttentionWarps * plan.rows_per_warp);
        for (int64_t r = 0; r < tile.n_pos * tile.n_heads; ++r) {
            const int64_t t = tile.t0 + r / tile.n_heads, h = tile.head0 + r % tile.n_heads;
            ASSERT_EQ(h / (sh.n_heads / sh.n_kv_heads), tile.kv_head);
            const int64_t pos = sh.start_pos + t;
            const int64_t first_key = sh.window > 0 ? std::max<int64_t>(0, pos - sh.window + 1) : 0;
            std::vector<float> q(size_t(sh.head_dim)), acc(size_t(sh.v_dim), 0.0f);
            for (int64_t d = 0; d < sh.head_dim; ++d)
                q[size_t(d)] = s.q[(t * sh.n_heads + h) * sh.head_dim + d] * q_scale;
            float m = -INFINITY, sum = 0.0f;
            for (int64_t c0 = tile.key_begin; c0 < tile.key_end; c0 += cuda::kAttentionChunk) {
                float score[cuda::kAttentionChunk];
                bool visible[cuda::kAttentionChunk];
                float chunk_max = -INFINITY;
                for (int j = 0; j < cuda::kAttentionChunk; ++j) {
                    const int64_t key = c0 + j;
                    visible[j] = key < tile.key_end && key <= pos && key >= first_key;
                    score[j] = 0.0f;
                    if (!visible[j]) continue;
                    const int64_t at = cuda::kv_element(s.k, key, tile.kv_head);
                    for (int64_t d = 0; d < sh.head_dim; ++d)
                        score[j] += q[size_t(d)] * cuda::load_float(s.k.base, s.k.kind, at + d);
                    chunk_max = std::max(chunk_max, score[j]);
                }
                const float m_new = std::max(m, chunk_max);
                if (m_new == -INFINITY) continue;
                const float rescale = cuda::softmax_rescale(m, m_new);
                sum *= rescale;
                for (float& a : acc)
                    a *= rescale;
                for (int j = 0; j < cuda::kAttentionChunk; ++j) {
                    if (!visible[j]) continue;
                    const float p = std::exp2(score[j] - m_new);
                    sum += p;
                    const int64_t at = cuda::kv_element(s.v, c0 + j, tile.kv_head);
                    for (int64_t d = 0; d < sh.v_dim; ++d)
                        acc[size_t(d)] += p * cuda::load_float(s.v.base, s.v.kind, at + d);
                }
                m = m_new;
            }
            if (tile.partial < 0) {
                float* out = s.out + (t * sh.n_heads + h) * sh.v_dim;
                for (int64_t d = 0; d < sh.v_dim; ++d) {
                    ASSERT_TRUE(std::isnan(out[d])) << "row written twice: token " << t;
                    out[d] = acc[size_t(d)] / sum;
                }
            } else {
                float* row = partials.data() + (tile.partial + r) * stride;
                ASSERT_TRUE(std::isnan(row[0])) << "partial row written twice";
                row[cuda::PartialRow::kMax] = m;
                row[cuda::PartialRow::kSum] = sum;
                std::copy(acc.begin(), acc.end(), row + cuda::PartialRow::kAcc);
            }
        }
    }
    for (const cuda::AttentionSplitGroup& g : plan.groups) {
        const EmulatedSequence& s = seqs[size_t(g.seq)];
        const int64_t rows = g.n_pos * g.n_heads;
        for (int64_t r = 0; r < rows; ++r) {
            const int64_t t = g.t0 + r / g.n_heads, h = g.head0 + r % g.n_heads;
            float* out = s.out + (t * s.shape.n_heads + h) * s.shape.v_dim;
            for (int64_t d = 0; d < s.shape.v_dim; ++d) {
                ASSERT_TRUE(std::isnan(out[d])) << "split row also written directly";
                out[d] = cuda::combine_partials(partials.data() + (g.partial + r) * stride,
                                                rows * stride, g.n_splits, d);
            }
        }
    }
}

struct EmulationCase {
    int64_t n_heads, n_kv_heads, head_dim, v_dim;
    DType dtype;
    int64_t window;
    std::vector<std::pair<int64_t, int64_t>> sequences;  // (start_pos, n_new)
    int multiprocessors;
};

TEST(CudaMathTwins, AttentionPlanAndRowArithmeticMatchCpuAttention) {
    TANDEM_SEEDED(seed);
    std::mt19937_64 rng(seed);
    const std::vector<EmulationCase> cases = {
        {32, 8, 128, 128, DType::BF16, 0, {{0, 1}, {16, 1}, {254, 1}, {4095, 1}}, 132},
        {8, 8, 64, 64, DType::F16, 0, {{1999, 1}}, 132},
        {16, 2, 80, 80, DType::F32, 0, {{17, 7}, {255, 64}}, 8},
        {8, 8, 64, 64, DType::BF16, 0, {{255, 300}}, 132},
        {32, 8, 64, 64, DType::BF16, 0, {{0, 300}, {1000, 1}, {40, 7}}, 132},
        {32, 8, 128, 128, DType::BF16, 128, {{4000, 1}, {500, 64}}, 132},
        {16, 2, 64, 64, DType::F16, 37, {{300, 7}, {0, 17}}, 16},
        {16, 2, 96, 64, DType::BF16, 0, {{700, 1}, {33, 64}}, 132},
        {8, 2, 256, 256, DType::BF16, 0, {{3000, 1}, {100, 40}}, 132},
    };
    const int64_t block_size = 16;
    for (const EmulationCase& c : cases) {
        SCOPED_TRACE("heads " + std::to_string(c.n_heads) + "/" + std::to_string(c.n_kv_heads) +
                     " head_dim " + std::to_string(c.head_dim) + " window " +
                     std::to_string(c.window) + " SMs " + std::to_string(c.multiprocessors));
        const size_t n = c.sequences.size();
        std::vector<std::vector<int32_t>> tables(n);
        std::vector<std::vector<uint8_t>> k_store(n), v_store(n);
        std::vector<std::vector<float>> queries(n), want(n), got(n);
        std::vector<cpu::AttentionArgs> cpu_args;
        std::vector<EmulatedSequence> emulated;
        const float scale = 1.0f / std::sqrt(float(c.head_dim));
        for (size_t i = 0; i < n; ++i) {
            const auto [start, n_new] = c.sequences[i];
            const int64_t length = start + n_new;
            const int64_t blocks = (length + block_size - 1) / block_size;
            tables[i].resize(size_t(blocks + 1));
            std::iota(tables[i].begin(), tables[i].end(), 0);
            std::shuffle(tables[i].begin(), tables[i].end(), rng);
            const int64_t element = c.dtype == DType::F32 ? 4 : 2;
            k_store[i].resize(
                size_t((blocks + 1) * block_size * c.n_kv_heads * c.head_dim * element));
            v_store[i].resize(size_t((blocks + 1) * block_size * c.n_kv_heads * c.v_dim * element));
            const KvRows k(k_store[i].data(), tables[i].data(), block_size, c.n_kv_heads,
                           c.head_dim, blocks * block_size, c.dtype);
            const KvRows v(v_store[i].data(), tables[i].data(), block_size, c.n_kv_heads, c.v_dim,
                           blocks * block_size, c.dtype);
            write_rows(k, 0, random_floats(rng, size_t(length * c.n_kv_heads * c.head_dim)).data(),
                       length);
            write_rows(v, 0, random_floats(rng, size_t(length * c.n_kv_heads * c.v_dim)).data(),
                       length);
            queries[i] = random_floats(rng, size_t(n_new * c.n_heads * c.head_dim));
            want[i].assign(size_t(n_new * c.n_heads * c.v_dim), NAN);
            got[i].assign(want[i].size(), NAN);
            cpu_args.push_back(
                {.q = Tensor(queries[i].data(), DType::F32, {n_new, c.n_heads, c.head_dim}),
                 .k_cache = k,
                 .v_cache = v,
                 .out = Tensor(want[i].data(), DType::F32, {n_new, c.n_heads, c.v_dim}),
                 .start_pos = start,
                 .scale = scale,
                 .sliding_window = c.window});
            const auto kind = c.dtype == DType::F32   ? cuda::FloatKind::F32
                              : c.dtype == DType::F16 ? cuda::FloatKind::F16
                                                      : cuda::FloatKind::BF16;
            const auto view = [&](const KvRows& rows) {
                return cuda::KvView{.base = rows.base,
                                    .block_table = rows.block_table,
                                    .block_size = rows.block_size,
                                    .pos_stride = rows.pos_stride,
                                    .head_stride = rows.head_stride,
                                    .block_stride = rows.block_stride,
                                    .kind = kind};
            };
            emulated.push_back({.shape = {.n_new = n_new,
                                          .n_heads = c.n_heads,
                                          .n_kv_heads = c.n_kv_heads,
                                          .head_dim = c.head_dim,
                                          .v_dim = c.v_dim,
                                          .start_pos = start,
                                          .window = c.window},
                                .q = queries[i].data(),
                                .k = view(k),
                                .v = view(v),
                                .scale = scale,
                                .out = got[i].data()});
        }
        cpu::attention(cpu_args, pool());
        emulate_cuda_attention(emulated, c.multiprocessors);
        for (size_t i = 0; i < n; ++i)
            for (size_t j = 0; j < got[i].size(); ++j)
                // f32 in another order: ~1e-6; NaN (a row never written) fails.
                ASSERT_NEAR(got[i][j], want[i][j], 2e-5)
                    << "sequence " << i << " element " << j << " (token "
                    << int64_t(j) / (c.n_heads * c.v_dim) << ")";
    }
}

// The decode kernel (attention_decode.cu) over plan_decode, row by row on the CPU: each
// (sequence, query head, split) scores its decode_split_range, takes the softmax over the split
// in base 2 and writes a partial row (or, with one split, the output); combine_partials merges
// the splits. Checks the plan's bounds (split length, coverage of every key, lanes per row) and
// the per-row arithmetic against cpu::attention; the lanes' shuffles only a GPU runs.
TEST(CudaMathTwins, DecodePlanAndRowArithmeticMatchCpuAttention) {
    TANDEM_SEEDED(seed);
    std::mt19937_64 rng(seed);
    struct DecodeCase {
        int64_t n_heads, n_kv_heads, head_dim, v_dim;
        DType dtype;
        int64_t window;
        std::vector<int64_t> positions;
        int multiprocessors;
    };
    const std::vector<DecodeCase> cases = {
        {32, 8, 128, 128, DType::BF16, 0, {1023}, 132},
        {32, 8, 128, 128, DType::BF16, 0, {0, 16, 254, 4095}, 132},
        {8, 8, 64, 64, DType::F16, 0, {1999}, 132},
        {16, 2, 80, 80, DType::F32, 0, {17, 300}, 8},
        {32, 8, 128, 128, DType::BF16, 128, {4000, 60}, 132},
        {24, 2, 96, 64, DType::BF16, 37, {700, 5}, 16},
        {8, 2, 256, 256, DType::BF16, 0, {3000}, 132},
        {4, 1, 64, 64, DType::F16, 0, {5000}, 2},  // long splits: kDecodeMaxSplitKeys bounds them
    };
    const int64_t block_size = 16;
    for (const DecodeCase& c : cases) {
        SCOPED_TRACE("heads " + std::to_string(c.n_heads) + "/" + std::to_string(c.n_kv_heads) +
                     " head_dim " + std::to_string(c.head_dim) + " window " +
                     std::to_string(c.window) + " SMs " + std::to_string(c.multiprocessors));
        const auto batch = int64_t(c.positions.size());
        const int64_t group = c.n_heads / c.n_kv_heads;
        int64_t max_keys = 1;
        for (int64_t p : c.positions)
            max_keys = std::max(max_keys, p + 1);
        if (c.window > 0) max_keys = std::min(max_keys, c.window);
        const cuda::DecodePlan plan = cuda::plan_decode(batch, c.n_kv_heads, group, c.head_dim,
                                                        c.v_dim, max_keys, c.multiprocessors);
        ASSERT_LE(plan.split_keys, cuda::kDecodeMaxSplitKeys);
        ASSERT_EQ(plan.split_keys % 32, 0);
        ASSERT_GE(plan.n_splits * plan.split_keys, max_keys);
        ASSERT_LT((plan.n_splits - 1) * plan.split_keys, max_keys) << "an always-empty split";
        ASSERT_GE(plan.group_tile * plan.head_tiles, group);
        ASSERT_LE(plan.group_tile, cuda::kDecodeMaxGroup);
        ASSERT_GE(plan.k_lanes * cuda::kDecodeLaneElements, c.head_dim);
        ASSERT_GE(plan.v_lanes * cuda::kDecodeLaneElements, c.v_dim);
        ASSERT_LE(std::max(plan.k_lanes, plan.v_lanes), 32);
        const float scale = 1.0f / std::sqrt(float(c.head_dim));
        const float q_scale = scale * std::numbers::log2e_v<float>;
        const int64_t stride = cuda::PartialRow::kAcc + c.v_dim;
        const auto kind = c.dtype == DType::F32   ? cuda::FloatKind::F32
                          : c.dtype == DType::F16 ? cuda::FloatKind::F16
                                                  : cuda::FloatKind::BF16;
        for (int64_t b = 0; b < batch; ++b) {
            const int64_t position = c.positions[size_t(b)], length = position + 1;
            const int64_t blocks = (length + block_size - 1) / block_size;
            std::vector<int32_t> table(size_t(blocks + 1));
            std::iota(table.begin(), table.end(), 0);
            std::shuffle(table.begin(), table.end(), rng);
            const int64_t element = c.dtype == DType::F32 ? 4 : 2;
            std::vector<uint8_t> k_store(
                size_t((blocks + 1) * block_size * c.n_kv_heads * c.head_dim * element));
            std::vector<uint8_t> v_store(
                size_t((blocks + 1) * block_size * c.n_kv_heads * c.v_dim * element));
            const KvRows k(k_store.data(), table.data(), block_size, c.n_kv_heads, c.head_dim,
                           blocks * block_size, c.dtype);
            const KvRows v(v_store.data(), table.data(), block_size, c.n_kv_heads, c.v_dim,
                           blocks * block_size, c.dtype);
            write_rows(k, 0, random_floats(rng, size_t(length * c.n_kv_heads * c.head_dim)).data(),
                       length);
            write_rows(v, 0, random_floats(rng, size_t(length * c.n_kv_heads * c.v_dim)).data(),
                       length);
            const std::vector<float> q = random_floats(rng, size_t(c.n_heads * c.head_dim));
            // Every other case with gpt-oss's sinks (natural-log units, as the CPU takes them).
            const std::vector<float> sinks = random_floats(rng, size_t(c.n_heads), 2.0f);
            const bool with_sinks = (&c - cases.data()) % 2 == 1;
            std::vector<float> want(size_t(c.n_heads * c.v_dim), NAN);
            const cpu::AttentionArgs args{
                .q = Tensor(const_cast<float*>(q.data()), DType::F32, {1, c.n_heads, c.head_dim}),
                .k_cache = k,
                .v_cache = v,
                .out = Tensor(want.data(), DType::F32, {1, c.n_heads, c.v_dim}),
                .start_pos = position,
                .scale = scale,
                .sliding_window = c.window,
                .sinks = with_sinks ? sinks.data() : nullptr};
            cpu::attention(std::span(&args, 1), pool());
            const auto view = [&](const KvRows& rows) {
                return cuda::KvView{.base = rows.base,
                                    .block_table = rows.block_table,
                                    .block_size = rows.block_size,
                                    .pos_stride = rows.pos_stride,
                                    .head_stride = rows.head_stride,
                                    .block_stride = rows.block_stride,
                                    .kind = kind};
            };
            const cuda::KvView kv = view(k), vv = view(v);
            for (int64_t h = 0; h < c.n_heads; ++h) {
                const int64_t kv_head = h / group;
                std::vector<float> partials(size_t(plan.n_splits * stride), NAN);
                int64_t keys_seen = 0;
                for (int split = 0; split < plan.n_splits; ++split) {
                    const cuda::KeyRange r =
                        cuda::decode_split_range(position, c.window, split, plan.split_keys);
                    keys_seen += r.end - r.begin;
                    std::vector<float> scores;
                    for (int64_t key = r.begin; key < r.end; ++key) {
                        float s = 0.0f;
                        const int64_t at = cuda::kv_element(kv, key, kv_head);
                        for (int64_t d = 0; d < c.head_dim; ++d)
                            s += q[size_t(h * c.head_dim + d)] * q_scale *
                                 cuda::load_float(kv.base, kv.kind, at + d);
                        scores.push_back(s);
                    }
                    float m = -INFINITY, sum = 0.0f;
                    for (float s : scores)
                        m = std::max(m, s);
                    std::vector<float> acc(size_t(c.v_dim), 0.0f);
                    for (size_t i = 0; i < scores.size(); ++i) {
                        const float p = std::exp2(scores[i] - m);
                        sum += p;
                        const int64_t at = cuda::kv_element(vv, r.begin + int64_t(i), kv_head);
                        for (int64_t d = 0; d < c.v_dim; ++d)
                            acc[size_t(d)] += p * cuda::load_float(vv.base, vv.kind, at + d);
                    }
                    float* row = partials.data() + split * stride;
                    row[cuda::PartialRow::kMax] = m;
                    row[cuda::PartialRow::kSum] = sum;
                    std::copy(acc.begin(), acc.end(), row + cuda::PartialRow::kAcc);
                }
                const int64_t first =
                    c.window > 0 ? std::max<int64_t>(0, position - c.window + 1) : 0;
                ASSERT_EQ(keys_seen, position + 1 - first) << "sequence " << b << " head " << h;
                const float sink2 = cuda::sink_log2(with_sinks ? sinks.data() : nullptr, h);
                for (int64_t d = 0; d < c.v_dim; ++d) {
                    const float got =
                        plan.n_splits == 1
                            ? cuda::softmax_output(partials[size_t(cuda::PartialRow::kAcc + d)],
                                                   partials[size_t(cuda::PartialRow::kSum)],
                                                   partials[size_t(cuda::PartialRow::kMax)], sink2)
                            : cuda::combine_partials(partials.data(), stride, plan.n_splits, d,
                                                     sink2);
                    // f32 in another order than the CPU's: ~1e-6; NaN (a lost row) fails.
                    ASSERT_NEAR(got, want[size_t(h * c.v_dim + d)], 2e-5)
                        << "sequence " << b << " (position " << position << ") head " << h
                        << " dim " << d << ", " << plan.n_splits << " splits of "
                        << plan.split_keys;
                }
            }
        }
    }
}

// plan_prefill's tiles (the tensor-core prefill kernel's work): every (position, query head) of
// every sequence in exactly one tile of at most kPrefillRows rows, all of one KV head, with the
// key range from the window's start (or 0) to the tile's last position.
TEST(CudaMathTwins, PrefillPlanCoversEveryRowOnce) {
    const std::vector<cuda::AttentionShape> shapes = {
        {.n_new = 4096, .n_heads = 32, .n_kv_heads = 8, .head_dim = 128, .v_dim = 128},
        {.n_new = 67, .n_heads = 24, .n_kv_heads = 2, .head_dim = 64, .v_dim = 64, .start_pos = 10},
        {.n_new = 300, .n_heads = 8, .n_kv_heads = 8, .head_dim = 64, .v_dim = 64, .window = 37},
        {.n_new = 2, .n_heads = 128, .n_kv_heads = 1, .head_dim = 64, .v_dim = 64, .start_pos = 5},
    };
    const std::vector<cuda::AttentionTile> tiles = cuda::plan_prefill(shapes);
    std::vector<std::vector<int>> seen(shapes.size());
    for (size_t i = 0; i < shapes.size(); ++i)
        seen[i].assign(size_t(shapes[i].n_new * shapes[i].n_heads), 0);
    for (size_t i = 0; i < tiles.size(); ++i) {
        const cuda::AttentionTile& t = tiles[i];
        const cuda::AttentionShape& s = shapes[size_t(t.seq)];
        const int64_t group = s.n_heads / s.n_kv_heads;
        ASSERT_LE(t.n_pos * t.n_heads, cuda::kPrefillRows);
        ASSERT_EQ(t.partial, -1);
        if (i > 0) {
            ASSERT_GE(tiles[i - 1].key_end - tiles[i - 1].key_begin, t.key_end - t.key_begin);
        }
        const int64_t first = s.start_pos + t.t0;
        ASSERT_EQ(t.key_end, first + t.n_pos);
        ASSERT_EQ(t.key_begin, s.window > 0 ? std::max<int64_t>(0, first - s.window + 1) : 0);
        for (int64_t p = t.t0; p < t.t0 + t.n_pos; ++p)
            for (int64_t h = t.head0; h < t.head0 + t.n_heads; ++h) {
                ASSERT_EQ(h / group, t.kv_head);
                ++seen[size_t(t.seq)][size_t(p * s.n_heads + h)];
            }
    }
    for (size_t i = 0; i < shapes.size(); ++i)
        for (size_t r = 0; r < seen[i].size(); ++r)
            ASSERT_EQ(seen[i][r], 1) << "sequence " << i << " row " << r;
}

// The experts' activation of glu_math.h: SwiGLU (limit 0) gives cpu::silu(g) * u to the bit (the
// same expression), gpt-oss's clamped variant float64 of its formula to f32 rounding, across the
// clamp (|g|, |u| up to 3x the limit).
TEST(CudaMathTwins, GatedActivationMatchesTheCpuAndFloat64) {
    TANDEM_SEEDED(seed);
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<float> value(-21.0f, 21.0f);
    const float limit = 7.0f, alpha = 1.702f;
    for (int i = 0; i < 100000; ++i) {
        const float g = value(rng), u = value(rng);
        ASSERT_EQ(cuda::f32_to_bits(cuda::gated_activation(g, u, 0.0f, 1.0f)),
                  cuda::f32_to_bits(cpu::silu(g) * u))
            << "g " << g << " u " << u;
        const double gc = std::min(double(g), double(limit));
        const double uc = std::clamp(double(u), -double(limit), double(limit));
        const double want = (uc + 1) * gc / (1 + std::exp(-double(alpha) * gc));
        const float got = cuda::gated_activation(g, u, limit, alpha);
        ASSERT_NEAR(got, want, 4e-7 * std::max(1.0, std::abs(want))) << "g " << g << " u " << u;
    }
}

}  // namespace
}  // namespace tandem

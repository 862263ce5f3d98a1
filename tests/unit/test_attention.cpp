// The attention kernels (GQA and latent) over paged KV rows of f32, f16 and bf16, on every ISA
// this CPU runs: against a float64 softmax over the values the cache actually stores, on fresh
// random inputs, and bit for bit against themselves however the positions are chunked and
// batched. Caches start filled with NaN, so a key read past a sequence's end shows; outputs
// start as NaN, so an element the kernel forgot to write fails the comparison.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>

#include "cache/kv_cache.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/cpu_isa.h"
#include "kernels/cpu/latent_attention.h"
#include "kernels/cpu/vec_dot.h"
#include "tests/test_util.h"

namespace tandem {
namespace {

using cpu::CpuIsa;
using test::IsaGuard;
using test::runnable_isas;

ThreadPool& pool() {
    static ThreadPool instance({.n_threads = 3, .pin = false});
    return instance;
}

// The value the cache holds after rounding v to its type.
double stored(float v, DType dtype) {
    if (dtype == DType::BF16) return bf16_to_f32(f32_to_bf16(v));
    if (dtype == DType::F16) return f16_to_f32(f32_to_f16(v));
    return v;
}

// One layer's keys or values in blocks of block_size positions, the blocks in scrambled order,
// every byte NaN until written.
struct PagedRows {
    std::vector<std::byte> storage;
    std::vector<int32_t> table;
    KvRows rows;

    PagedRows(DType dtype, int64_t positions, int64_t block_size, int64_t heads, int64_t dim,
              std::mt19937_64& rng) {
        const int64_t blocks = (positions + block_size - 1) / block_size;
        table.resize(size_t(blocks));
        std::iota(table.begin(), table.end(), 0);
        std::shuffle(table.begin(), table.end(), rng);
        storage.assign(size_t(blocks * block_size * heads * dim * dtype_block_bytes(dtype)),
                       std::byte{0xFF});
        rows = KvRows(storage.data(), table.data(), block_size, heads, dim, blocks * block_size,
                      dtype);
    }
};

OwnedTensor tensor_of(const std::vector<float>& values, Shape shape) {
    OwnedTensor t = make_tensor(DType::F32, shape);
    std::copy(values.begin(), values.end(), t.view.data_as<float>());
    return t;
}

OwnedTensor nan_tensor(Shape shape) {
    OwnedTensor t = make_tensor(DType::F32, shape);
    std::fill_n(t.view.data_as<float>(), t.view.numel(), std::numeric_limits<float>::quiet_NaN());
    return t;
}

// float64 softmax attention of query rows q[t][h] (positions start + t) over keys and values
// given as functions of (position, kv head, d); with `sinks`, sinks[h] is one more logit in the
// softmax of head h, with no value (gpt-oss).
template <class Key, class Value>
std::vector<double> reference(const std::vector<float>& q, int n_new, int start, int heads,
                              int kv_heads, int dim, int v_dim, int window, double scale, Key key,
                              Value value, const std::vector<float>* sinks = nullptr) {
    std::vector<double> want(size_t(n_new * heads * v_dim));
    for (int t = 0; t < n_new; ++t)
        for (int h = 0; h < heads; ++h) {
            const int kv = h / (heads / kv_heads), pos = start + t;
            const int first = window > 0 ? std::max(0, pos - window + 1) : 0;
            std::vector<double> s;
            double mx = -1e300;
            for (int j = first; j <= pos; ++j) {
                double dot = 0;
                for (int d = 0; d < dim; ++d)
                    dot += double(q[size_t((t * heads + h) * dim + d)]) * key(j, kv, d);
                s.push_back(dot * scale);
                mx = std::max(mx, s.back());
            }
            double total = 0;
            for (double& e : s)
                total += e = std::exp(e - mx);
            if (sinks != nullptr) total += std::exp(double((*sinks)[size_t(h)]) - mx);
            for (int d = 0; d < v_dim; ++d) {
                double acc = 0;
                for (int j = first; j <= pos; ++j)
                    acc += s[size_t(j - first)] / total * value(j, kv, d);
                want[size_t((t * heads + h) * v_dim + d)] = acc;
            }
        }
    return want;
}

double worst_error(const Tensor& got, const std::vector<double>& want) {
    double worst = 0;
    for (size_t i = 0; i < want.size(); ++i) {
        const double g = got.data_as<const float>()[i];
        worst = std::max(
            worst, std::isfinite(g) ? std::fabs(g - want[i]) / (1 + std::fabs(want[i])) : INFINITY);
    }
    return worst;
}

struct Case {
    int n_new, start, heads, kv_heads, dim, window, block_size;
};

class AttentionTest : public ::testing::TestWithParam<DType> {};

TEST_P(AttentionTest, MatchesFloat64OnEveryIsa) {
    const DType dtype = GetParam();
    IsaGuard guard;
    TANDEM_SEEDED(seed);
    std::mt19937_64 rng(seed);
    const Case cases[] = {
        {1, 0, 4, 4, 64, 0, 16},     // the first token of a sequence, no GQA
        {1, 37, 8, 4, 128, 0, 16},   // decode at a prime context, GQA 2
        {1, 47, 8, 2, 64, 0, 16},    // decode on the last position of a key chunk, GQA 4
        {1, 48, 4, 1, 128, 0, 5},    // decode opening a chunk, blocks of 5
        {13, 0, 4, 2, 64, 0, 16},    // a prime prefill
        {100, 0, 2, 1, 64, 0, 16},   // prefill over many chunks and two tiles
        {70, 0, 4, 4, 128, 0, 7},    // two tiles of positions, blocks that straddle chunks
        {41, 29, 8, 2, 128, 0, 16},  // a chunk of prefill after existing context
        {17, 100, 4, 1, 64, 0, 16}, {9, 5, 6, 3, 37, 0, 4},  // odd head_dim
        {1, 20, 4, 4, 5, 0, 3},                              // tiny odd head_dim
        {30, 10, 4, 2, 64, 7, 16},                           // sliding window
        {1, 60, 4, 2, 64, 20, 16},                           // sliding window, decode
    };
    double worst_all = 0;
    for (CpuIsa isa : runnable_isas()) {
        cpu::force_isa(isa);
        for (const Case& c : cases)
            for (const bool with_sinks : {false, true}) {
                SCOPED_TRACE(::testing::Message()
                             << cpu::isa_name(isa) << " n_new " << c.n_new << " start " << c.start
                             << " heads " << c.heads << "/" << c.kv_heads << " dim " << c.dim
                             << " window " << c.window << " sinks " << with_sinks);
                // Sinks around the scores' scale: from negligible to dominating the denominator.
                const auto sinks = test::random_floats(rng, size_t(c.heads), 3.0f);
                const int ctx = c.start + c.n_new;
                // A peaky softmax now and then (larger queries) tests the running max.
                const float q_std =
                    std::uniform_int_distribution<int>(0, 2)(rng) == 0 ? 4.0f : 1.0f;
                const auto q = test::random_floats(rng, size_t(c.n_new * c.heads * c.dim), q_std);
                const auto k = test::random_floats(rng, size_t(ctx * c.kv_heads * c.dim));
                const auto v = test::random_floats(rng, size_t(ctx * c.kv_heads * c.dim));
                PagedRows kc(dtype, ctx + 3, c.block_size, c.kv_heads, c.dim, rng);
                PagedRows vc(dtype, ctx + 3, c.block_size, c.kv_heads, c.dim, rng);
                write_rows(kc.rows, 0, k.data(), ctx);
                write_rows(vc.rows, 0, v.data(), ctx);
                OwnedTensor qt = tensor_of(q, {c.n_new, c.heads, c.dim});
                OwnedTensor out = nan_tensor({c.n_new, c.heads, c.dim});
                const float scale = 1.0f / std::sqrt(float(c.dim));
                cpu::attention({.q = qt.view,
                                .k_cache = kc.rows,
                                .v_cache = vc.rows,
                                .out = out.view,
                                .start_pos = c.start,
                                .scale = scale,
                                .sliding_window = c.window,
                                .sinks = with_sinks ? sinks.data() : nullptr},
                               pool());
                const int row = c.kv_heads * c.dim;
                const auto want = reference(
                    q, c.n_new, c.start, c.heads, c.kv_heads, c.dim, c.dim, c.window, scale,
                    [&](int j, int kv, int d) {
                        return stored(k[size_t(j * row + kv * c.dim + d)], dtype);
                    },
                    [&](int j, int kv, int d) {
                        return stored(v[size_t(j * row + kv * c.dim + d)], dtype);
                    },
                    with_sinks ? &sinks : nullptr);
                const double worst = worst_error(out.view, want);
                EXPECT_LT(worst, 2e-5);
                worst_all = std::max(worst_all, worst);
            }
    }
    RecordProperty("worst_relative_error", std::to_string(worst_all));
}

// Latent attention (one cache row per position, values = its part past rope_dim) on every ISA.
TEST_P(AttentionTest, LatentMatchesFloat64OnEveryIsa) {
    const DType dtype = GetParam();
    IsaGuard guard;
    TANDEM_SEEDED(seed);
    std::mt19937_64 rng(seed);
    const int heads = 16, rope = 16, latent = 64, row = rope + latent;
    for (CpuIsa isa : runnable_isas()) {
        cpu::force_isa(isa);
        for (auto [n_new, start] : {std::pair{1, 0}, {1, 45}, {23, 0}, {19, 31}}) {
            SCOPED_TRACE(::testing::Message()
                         << cpu::isa_name(isa) << " n_new " << n_new << " start " << start);
            const int ctx = start + n_new;
            const auto q = test::random_floats(rng, size_t(n_new * heads * row));
            const auto c = test::random_floats(rng, size_t(ctx * row));
            PagedRows cache(dtype, ctx, 16, 1, row, rng);
            write_rows(cache.rows, 0, c.data(), ctx);
            OwnedTensor qt = tensor_of(q, {n_new, heads, row});
            OwnedTensor out = nan_tensor({n_new, heads, latent});
            const float scale = 0.1f;
            cpu::latent_attention({.q = qt.view,
                                   .cache = cache.rows,
                                   .out = out.view,
                                   .rope_dim = rope,
                                   .start_pos = start,
                                   .scale = scale},
                                  pool());
            const auto want = reference(
                q, n_new, start, heads, 1, row, latent, 0, scale,
                [&](int j, int, int d) { return stored(c[size_t(j * row + d)], dtype); },
                [&](int j, int, int d) { return stored(c[size_t(j * row + rope + d)], dtype); });
            EXPECT_LT(worst_error(out.view, want), 2e-5);
        }
    }
}

// A row's result is the same bits whether its position is prefilled with the rest, in chunks of
// any size, decoded alone, or batched with other sequences in one call: what the engine's
// batch invariance rests on.
TEST_P(AttentionTest, ChunksDecodesAndBatchesGiveTheSameBits) {
    const DType dtype = GetParam();
    IsaGuard guard;
    TANDEM_SEEDED(seed);
    std::mt19937_64 rng(seed);
    const int n = 75, heads = 8, kv_heads = 2, dim = 64;
    for (CpuIsa isa : runnable_isas())
        for (int window : {0, 13}) {
            cpu::force_isa(isa);
            SCOPED_TRACE(::testing::Message() << cpu::isa_name(isa) << " window " << window);
            const auto q = test::random_floats(rng, size_t(n * heads * dim));
            const auto k = test::random_floats(rng, size_t(n * kv_heads * dim));
            const auto v = test::random_floats(rng, size_t(n * kv_heads * dim));
            PagedRows kc(dtype, n, 16, kv_heads, dim, rng), vc(dtype, n, 16, kv_heads, dim, rng);
            write_rows(kc.rows, 0, k.data(), n);
            write_rows(vc.rows, 0, v.data(), n);
            OwnedTensor qt = tensor_of(q, {n, heads, dim});
            auto args = [&](const OwnedTensor& out, int begin, int end) {
                return cpu::AttentionArgs{.q = qt.view.slice_rows(begin, end),
                                          .k_cache = kc.rows,
                                          .v_cache = vc.rows,
                                          .out = out.view.slice_rows(begin, end),
                                          .start_pos = begin,
                                          .scale = 0.125f,
                                          .sliding_window = window};
            };
            OwnedTensor whole = nan_tensor({n, heads, dim});
            cpu::attention(args(whole, 0, n), pool());
            const auto same = [&](const OwnedTensor& other, const char* how) {
                EXPECT_EQ(
                    std::memcmp(whole.view.data(), other.view.data(), size_t(whole.view.bytes())),
                    0)
                    << how;
            };
            OwnedTensor decoded = nan_tensor({n, heads, dim});
            for (int t = 0; t < n; ++t)
                cpu::attention(args(decoded, t, t + 1), pool());
            same(decoded, "token by token");
            OwnedTensor chunked = nan_tensor({n, heads, dim});
            for (int begin = 0; begin < n;) {
                const int end = std::min(n, begin + 1 + int(rng() % 40));
                cpu::attention(args(chunked, begin, end), pool());
                begin = end;
            }
            same(chunked, "random chunks");
            // All of it as three sequences of one batch, listed in a scrambled order.
            OwnedTensor batched = nan_tensor({n, heads, dim});
            const std::vector<cpu::AttentionArgs> batch = {
                args(batched, 50, 75), args(batched, 0, 9), args(batched, 9, 50)};
            cpu::attention(batch, pool());
            same(batched, "one batch");
        }
}

// Decode (a tile of one token's query heads of one KV head, 1 to 8 rows) at every GQA group
// size, head_dim and a range of context lengths (the first token, within a chunk, on chunk and
// block edges, primes across many chunks and blocks), with and without a sliding window: against
// float64, and bit for bit against the same row computed inside a whole prefill.
TEST_P(AttentionTest, DecodeMatchesFloat64AndPrefillBitsAtEveryGroupSize) {
    const DType dtype = GetParam();
    IsaGuard guard;
    TANDEM_SEEDED(seed);
    std::mt19937_64 rng(seed);
    const int kv_heads = 2;
    double worst_all = 0;
    for (CpuIsa isa : runnable_isas()) {
        cpu::force_isa(isa);
        for (int group : {1, 2, 4, 8})
            for (int dim : {64, 128, 37})
                for (int ctx : {1, 2, 16, 17, 31, 97})
                    for (int window : {0, 13}) {
                        SCOPED_TRACE(::testing::Message()
                                     << cpu::isa_name(isa) << " GQA " << group << " dim " << dim
                                     << " context " << ctx << " window " << window);
                        const int heads = kv_heads * group, pos = ctx - 1;
                        const auto q = test::random_floats(rng, size_t(ctx * heads * dim));
                        const auto k = test::random_floats(rng, size_t(ctx * kv_heads * dim));
                        const auto v = test::random_floats(rng, size_t(ctx * kv_heads * dim));
                        PagedRows kc(dtype, ctx + 5, 16, kv_heads, dim, rng);
                        PagedRows vc(dtype, ctx + 5, 16, kv_heads, dim, rng);
                        write_rows(kc.rows, 0, k.data(), ctx);
                        write_rows(vc.rows, 0, v.data(), ctx);
                        OwnedTensor qt = tensor_of(q, {ctx, heads, dim});
                        const float scale = 1.0f / std::sqrt(float(dim));
                        auto args = [&](const OwnedTensor& out, int begin) {
                            return cpu::AttentionArgs{.q = qt.view.slice_rows(begin, ctx),
                                                      .k_cache = kc.rows,
                                                      .v_cache = vc.rows,
                                                      .out = out.view,
                                                      .start_pos = begin,
                                                      .scale = scale,
                                                      .sliding_window = window};
                        };
                        OwnedTensor decoded = nan_tensor({1, heads, dim});
                        cpu::attention(args(decoded, pos), pool());
                        const int row = kv_heads * dim;
                        const std::vector<float> last_q(q.begin() + pos * heads * dim, q.end());
                        const auto want = reference(
                            last_q, 1, pos, heads, kv_heads, dim, dim, window, scale,
                            [&](int j, int kv, int d) {
                                return stored(k[size_t(j * row + kv * dim + d)], dtype);
                            },
                            [&](int j, int kv, int d) {
                                return stored(v[size_t(j * row + kv * dim + d)], dtype);
                            });
                        const double worst = worst_error(decoded.view, want);
                        EXPECT_LT(worst, 2e-5);
                        worst_all = std::max(worst_all, worst);
                        OwnedTensor prefilled = nan_tensor({ctx, heads, dim});
                        cpu::attention(args(prefilled, 0), pool());
                        EXPECT_EQ(std::memcmp(decoded.view.data(),
                                              prefilled.view.slice_rows(pos, ctx).data(),
                                              size_t(decoded.view.bytes())),
                                  0);
                    }
    }
    RecordProperty("worst_relative_error", std::to_string(worst_all));
}

INSTANTIATE_TEST_SUITE_P(KvTypes, AttentionTest,
                         ::testing::Values(DType::F32, DType::F16, DType::BF16),
                         [](const auto& param_info) {
                             return std::string(dtype_name(param_info.param));
                         });

// The row conversions of every ISA round exactly as the scalar definitions in kernels/dtype.h
// (bf16: to nearest even; f16: IEEE, overflow to infinity), at every length of tail.
TEST(KvRowConversion, EveryIsaRoundsAsTheScalarDefinition) {
    TANDEM_SEEDED(seed);
    std::mt19937_64 rng(seed);
    std::vector<float> x = test::random_floats(rng, 1000, 3.0f);
    // Ties, overflow, infinities, the f16 subnormal range. (Not f32 subnormals: the AVX-512 bf16
    // instruction flushes those to zero.)
    const float specials[] = {1.0f + 0x1p-8f,
                              1.0f + 0x1p-11f,
                              65504.0f,
                              65520.0f,
                              1e6f,
                              -1e6f,
                              INFINITY,
                              -INFINITY,
                              3e-6f,
                              -7e-8f,
                              0.0f,
                              -0.0f,
                              0x1.fffffep127f,
                              1.0f + 0x1p-7f + 0x1p-8f};
    std::copy(std::begin(specials), std::end(specials), x.begin() + 100);
    for (CpuIsa isa : runnable_isas()) {
        const cpu::VecDotKernels& kernels = cpu::vec_dot_kernels_for(isa);
        for (int64_t n : {1, 7, 8, 15, 16, 17, 33, 1000}) {
            std::vector<uint16_t> h(static_cast<size_t>(n)), b(static_cast<size_t>(n));
            std::vector<float> back(static_cast<size_t>(n));
            kernels.f32_to_f16(x.data(), h.data(), n);
            kernels.f32_to_bf16(x.data(), b.data(), n);
            for (int64_t i = 0; i < n; ++i) {
                ASSERT_EQ(h[size_t(i)], f32_to_f16(x[size_t(i)])) << cpu::isa_name(isa) << " " << i;
                ASSERT_EQ(b[size_t(i)], f32_to_bf16(x[size_t(i)]))
                    << cpu::isa_name(isa) << " " << i;
            }
            kernels.f16_to_f32(h.data(), back.data(), n);
            for (int64_t i = 0; i < n; ++i) {
                const float want = f16_to_f32(h[size_t(i)]);
                ASSERT_EQ(std::memcmp(&back[size_t(i)], &want, sizeof(want)), 0)
                    << cpu::isa_name(isa) << " " << i;
            }
        }
    }
}

}  // namespace
}  // namespace tandem

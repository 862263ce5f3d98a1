// Multi-head latent attention on the GPU: cuda::latent_attention against cpu::latent_attention
// on paged latent caches (shuffled block tables, f32/f16/bf16 rows, contexts 1..4096, decode
// with split-K and chunked prefill, head counts that are not multiples of the kernel's 8, the
// widest row it takes), and the MLA step ops of kernels/cuda/mla.h against float64. Fresh random
// inputs; outputs poisoned, so every element must be written. Skips where no GPU is present.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "cache/kv_cache.h"
#include "kernels/cpu/latent_attention.h"
#include "kernels/cuda/latent_attention.h"
#include "kernels/cuda/mla.h"
#include "kernels/error.h"
#include "tests/gpu/gpu_test_util.h"
#include "tests/test_util.h"

namespace tandem {
namespace {

using test::kGpu;
using test::random_floats;

ThreadPool& pool() {
    static ThreadPool instance({.n_threads = 4, .pin = false});
    return instance;
}

constexpr int64_t kBlockSize = 16;

// One sequence's paged latent cache (one head of `row` elements) on the host and the device.
struct LatentCache {
    int64_t capacity = 0, row = 0;
    DType dtype = DType::F32;
    std::vector<int32_t> table;
    std::vector<uint8_t> host;
    OwnedTensor device, table_dev;

    KvRows rows(bool on_device) const {
        void* base = on_device ? device->data() : const_cast<uint8_t*>(host.data());
        const int32_t* t = on_device ? table_dev->data_as<const int32_t>() : table.data();
        return KvRows(base, t, kBlockSize, 1, row, capacity, dtype);
    }
};

LatentCache make_cache(std::mt19937_64& rng, int64_t length, int64_t row, DType dtype,
                       Stream& stream) {
    LatentCache c{.capacity = (length + kBlockSize - 1) / kBlockSize * kBlockSize,
                  .row = row,
                  .dtype = dtype};
    const int64_t n_blocks = c.capacity / kBlockSize, pool_blocks = n_blocks + 3;
    std::vector<int32_t> ids(static_cast<size_t>(pool_blocks));
    std::iota(ids.begin(), ids.end(), 0);
    std::shuffle(ids.begin(), ids.end(), rng);
    c.table.assign(ids.begin(), ids.begin() + n_blocks);
    const int64_t element = dtype == DType::F32 ? 4 : 2;
    c.host.assign(size_t(pool_blocks * kBlockSize * row * element), 0);
    write_rows(c.rows(false), 0, random_floats(rng, size_t(length * row)).data(), length);
    c.device = test::upload(c.host, DType::I32, {int64_t(c.host.size() / 4)}, stream);
    c.table_dev = test::upload(c.table, DType::I32, {n_blocks}, stream);
    return c;
}

struct SequenceCase {
    int64_t start_pos, n_new;
};

struct LatentCase {
    int64_t n_heads, rope, latent;
    DType dtype;
    std::vector<SequenceCase> sequences;
};

std::string describe(const LatentCase& c) {
    std::string s = "heads " + std::to_string(c.n_heads) + " rope " + std::to_string(c.rope) +
                    " latent " + std::to_string(c.latent) + " " + std::string(dtype_name(c.dtype)) +
                    " sequences";
    for (const SequenceCase& q : c.sequences)
        s += " (start " + std::to_string(q.start_pos) + ", new " + std::to_string(q.n_new) + ")";
    return s;
}

void check_latent(const LatentCase& c, uint64_t seed) {
    SCOPED_TRACE(describe(c) + " seed " + std::to_string(seed));
    std::mt19937_64 rng(seed);
    auto stream = make_stream(kGpu);
    cuda::Context ctx(*stream);
    const int64_t row = c.rope + c.latent;
    // DeepSeek's scale: (nope + rope)^-0.5 with nope 128, times a YaRN mscale² of ~1.5.
    const float scale = 1.5f / std::sqrt(192.0f);
    std::vector<LatentCache> caches;
    std::vector<std::vector<float>> queries, want;
    std::vector<OwnedTensor> q_dev, out_dev;
    for (const SequenceCase& s : c.sequences) {
        caches.push_back(make_cache(rng, s.start_pos + s.n_new, row, c.dtype, *stream));
        queries.push_back(random_floats(rng, size_t(s.n_new * c.n_heads * row)));
        want.emplace_back(size_t(s.n_new * c.n_heads * c.latent), NAN);
    }
    std::vector<cuda::LatentAttentionArgs> gpu_args;
    for (size_t i = 0; i < c.sequences.size(); ++i) {
        const SequenceCase& s = c.sequences[i];
        const Shape q_shape{s.n_new, c.n_heads, row}, out_shape{s.n_new, c.n_heads, c.latent};
        cpu::latent_attention({.q = Tensor(queries[i].data(), DType::F32, q_shape),
                               .cache = caches[i].rows(false),
                               .out = Tensor(want[i].data(), DType::F32, out_shape),
                               .rope_dim = c.rope,
                               .start_pos = s.start_pos,
                               .scale = scale},
                              pool());
        q_dev.push_back(test::upload(queries[i], DType::F32, q_shape, *stream));
        out_dev.push_back(test::poisoned(DType::F32, out_shape, *stream));
        gpu_args.push_back({.q = *q_dev.back(),
                            .cache = caches[i].rows(true),
                            .out = *out_dev.back(),
                            .rope_dim = c.rope,
                            .start_pos = s.start_pos,
                            .scale = scale});
    }
    cuda::latent_attention(ctx, gpu_args);
    for (size_t i = 0; i < c.sequences.size(); ++i) {
        const std::vector<float> got = test::download<float>(*out_dev[i], *stream);
        const std::vector<double> reference(want[i].begin(), want[i].end());
        // Both sides f32 over the same stored rows, summed in other orders and with the device's
        // exp2 (2 ulp): ~1e-6 of the output scale. 1e-4 leaves room and no room for a masking or
        // indexing bug (errors of 0.1-1).
        const test::WorstError worst = test::worst_error(got, reference);
        EXPECT_LE(worst.error, 1e-4) << "sequence " << i << ": " << worst.str(c.latent);
    }
}

TEST(CudaLatentAttention, MatchesTheCpuOnPagedLatentCaches) {
    TANDEM_REQUIRE_GPU();
    TANDEM_SEEDED(seed);
    const std::vector<LatentCase> cases = {
        // DeepSeek-V2-Lite's shape (16 heads, 64 + 512): decode at contexts 1..4096 (split-K
        // from a few hundred keys), every cache type.
        {16, 64, 512, DType::BF16, {{0, 1}}},
        {16, 64, 512, DType::BF16, {{16, 1}}},
        {16, 64, 512, DType::F16, {{700, 1}}},
        {16, 64, 512, DType::F32, {{4095, 1}}},
        // V3's 128 heads, and a batch of decodes of different lengths in one call.
        {128, 64, 512, DType::BF16, {{1000, 1}}},
        {16, 64, 512, DType::BF16, {{0, 1}, {31, 1}, {254, 1}, {2047, 1}}},
        // Prefill: from 0, chunked (start_pos > 0), mixed with decodes.
        {16, 64, 512, DType::BF16, {{0, 37}}},
        {16, 64, 512, DType::F32, {{100, 64}, {0, 1}, {2000, 1}}},
        // Head counts that are not multiples of 8, odd dims, the widest row (768).
        {3, 16, 40, DType::F32, {{0, 37}, {5, 1}}},
        {20, 32, 96, DType::F16, {{17, 300}}},
        {8, 64, 704, DType::BF16, {{500, 3}, {1500, 1}}},
    };
    for (size_t i = 0; i < cases.size(); ++i)
        check_latent(cases[i], seed + i);
}

TEST(CudaLatentAttention, RefusesBadArguments) {
    TANDEM_REQUIRE_GPU();
    auto stream = make_stream(kGpu);
    cuda::Context ctx(*stream);
    std::mt19937_64 rng(1);
    LatentCache cache = make_cache(rng, 32, 72, DType::BF16, *stream);
    OwnedTensor q = test::poisoned(DType::F32, {1, 4, 72}, *stream);
    OwnedTensor out = test::poisoned(DType::F32, {1, 4, 64}, *stream);
    cuda::LatentAttentionArgs args{
        .q = *q, .cache = cache.rows(true), .out = *out, .rope_dim = 8, .start_pos = 40};
    EXPECT_THROW(cuda::latent_attention(ctx, {&args, 1}), Error);  // past the capacity
    args.start_pos = 0;
    args.rope_dim = 16;  // out's 64 latent dims do not match 72 - 16
    EXPECT_THROW(cuda::latent_attention(ctx, {&args, 1}), Error);
    args.rope_dim = 8;
    std::vector<float> host_q(4 * 72);
    args.q = Tensor(host_q.data(), DType::F32, {1, 4, 72});
    EXPECT_THROW(cuda::latent_attention(ctx, {&args, 1}), Error);  // host memory
    LatentCache wide = make_cache(rng, 16, 800, DType::BF16, *stream);
    OwnedTensor q_wide = test::poisoned(DType::F32, {1, 4, 800}, *stream);
    OwnedTensor out_wide = test::poisoned(DType::F32, {1, 4, 736}, *stream);
    args = {.q = *q_wide, .cache = wide.rows(true), .out = *out_wide, .rope_dim = 64};
    EXPECT_THROW(cuda::latent_attention(ctx, {&args, 1}), Error);  // rows past 768
}

// mla_split, mla_latent_into_rows, mla_absorb_query and mla_expand_values against float64 on
// fresh random tensors, interleaved and not, with poisoned outputs.
TEST(CudaMlaOps, MatchFloat64) {
    TANDEM_REQUIRE_GPU();
    TANDEM_SEEDED(seed);
    std::mt19937_64 rng(seed);
    auto stream = make_stream(kGpu);
    cuda::Context ctx(*stream);
    for (const bool interleaved : {false, true}) {
        SCOPED_TRACE(interleaved ? "interleaved" : "rotate-half");
        const cuda::MlaShape s{.n_heads = 5,
                               .nope = 24,
                               .rope = 16,
                               .latent = 40,
                               .v = 20,
                               .interleaved = interleaved};
        const int64_t n = 11, d = s.nope + s.rope, row = s.rope + s.latent;
        const std::vector<float> q = random_floats(rng, size_t(n * s.n_heads * d));
        const std::vector<float> kv = random_floats(rng, size_t(n * (s.latent + s.rope)));
        const std::vector<float> uk = random_floats(rng, size_t(s.n_heads * s.latent * s.nope));
        const std::vector<float> uv = random_floats(rng, size_t(s.n_heads * s.v * s.latent));
        const std::vector<float> lat = random_floats(rng, size_t(n * s.n_heads * s.latent));
        OwnedTensor q_d = test::upload(q, DType::F32, {n, s.n_heads * d}, *stream);
        OwnedTensor kv_d = test::upload(kv, DType::F32, {n, s.latent + s.rope}, *stream);
        OwnedTensor uk_d = test::upload(uk, DType::F32, {s.n_heads, s.latent, s.nope}, *stream);
        OwnedTensor uv_d = test::upload(uv, DType::F32, {s.n_heads, s.v, s.latent}, *stream);
        OwnedTensor lat_d = test::upload(lat, DType::F32, {n, s.n_heads, s.latent}, *stream);
        OwnedTensor q_abs = test::poisoned(DType::F32, {n, s.n_heads, row}, *stream);
        OwnedTensor rows = test::poisoned(DType::F32, {n, 1, row}, *stream);
        OwnedTensor latent = test::poisoned(DType::F32, {n, s.latent}, *stream);
        OwnedTensor attn = test::poisoned(DType::F32, {n, s.n_heads * s.v}, *stream);
        cuda::mla_split(ctx, s, *q_d, *kv_d, *q_abs, *rows, *latent);
        cuda::mla_latent_into_rows(ctx, s, *latent, *rows);
        cuda::mla_absorb_query(ctx, s, *q_d, *uk_d, *q_abs);
        cuda::mla_expand_values(ctx, s, *lat_d, *uv_d, *attn);

        std::vector<double> want_q(size_t(n * s.n_heads * row)), want_rows(size_t(n * row));
        std::vector<double> want_attn(size_t(n * s.n_heads * s.v));
        for (int64_t t = 0; t < n; ++t) {
            const float* kv_t = kv.data() + t * (s.latent + s.rope);
            for (int64_t j = 0; j < s.rope; ++j) {
                // The de-interleaving written out: pairs (2i, 2i + 1) go to (i, i + rope / 2).
                const int64_t src = !interleaved     ? j
                                    : j < s.rope / 2 ? 2 * j
                                                     : 2 * (j - s.rope / 2) + 1;
                want_rows[size_t(t * row + j)] = kv_t[s.latent + src];
                for (int64_t h = 0; h < s.n_heads; ++h)
                    want_q[size_t((t * s.n_heads + h) * row + j)] =
                        q[size_t((t * s.n_heads + h) * d + s.nope + src)];
            }
            for (int64_t j = 0; j < s.latent; ++j)
                want_rows[size_t(t * row + s.rope + j)] = kv_t[j];
            for (int64_t h = 0; h < s.n_heads; ++h) {
                for (int64_t j = 0; j < s.latent; ++j) {
                    double sum = 0;
                    for (int64_t i = 0; i < s.nope; ++i)
                        sum += double(uk[size_t((h * s.latent + j) * s.nope + i)]) *
                               q[size_t((t * s.n_heads + h) * d + i)];
                    want_q[size_t((t * s.n_heads + h) * row + s.rope + j)] = sum;
                }
                for (int64_t j = 0; j < s.v; ++j) {
                    double sum = 0;
                    for (int64_t r = 0; r < s.latent; ++r)
                        sum += double(uv[size_t((h * s.v + j) * s.latent + r)]) *
                               lat[size_t((t * s.n_heads + h) * s.latent + r)];
                    want_attn[size_t(t * s.n_heads * s.v + h * s.v + j)] = sum;
                }
            }
        }
        // Copies are exact; the products are f32 sums of 24-40 terms of unit scale (~1e-6).
        const test::WorstError e_q =
            test::worst_error(test::download<float>(*q_abs, *stream), want_q);
        const test::WorstError e_rows =
            test::worst_error(test::download<float>(*rows, *stream), want_rows);
        const test::WorstError e_attn =
            test::worst_error(test::download<float>(*attn, *stream), want_attn);
        EXPECT_LE(e_q.error, 1e-5) << e_q.str(row);
        EXPECT_EQ(e_rows.error, 0.0) << e_rows.str(row);
        EXPECT_LE(e_attn.error, 1e-5) << e_attn.str(s.n_heads * s.v);
    }
}

}  // namespace
}  // namespace tandem

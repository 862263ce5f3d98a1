// The paged KV cache: blocks come from and go back to the pool, a full pool refuses politely,
// f16/bf16 blocks take half the bytes, and attention over scattered blocks equals attention over
// one contiguous cache in every KV type. The prefix cache: hash chains of full blocks, reference
// counts, LRU eviction, reset, and no block lost at the end.
#include <gtest/gtest.h>

#include <random>

#include "cache/kv_cache.h"
#include "kernels/cpu/attention.h"
#include "kernels/error.h"
#include "tests/test_util.h"

namespace tandem {
namespace {

const KvCacheShape kShape{.n_layers = 2, .n_kv_heads = 2, .head_dim = 8, .v_head_dim = 8};

TEST(KvCache, BlocksComeFromThePoolAndGoBack) {
    auto pool = std::make_shared<KvBlockPool>(kShape, 4, 5);
    {
        KvCache a(pool, 20), b(pool, 20);
        EXPECT_TRUE(a.reserve(9));  // 3 blocks
        EXPECT_EQ(a.blocks(), 3);
        EXPECT_EQ(a.capacity(), 12);
        EXPECT_TRUE(b.reserve(8));  // 2 blocks: the pool is empty now
        EXPECT_EQ(pool->free_blocks(), 0);
        EXPECT_FALSE(b.reserve(9));  // refused, keeps what it had
        EXPECT_EQ(b.blocks(), 2);
        EXPECT_THROW(a.reserve(21), Error);  // beyond its own limit
        EXPECT_THROW(a.commit(13), Error);
        a.commit(12);
        EXPECT_EQ(a.length(), 12);
    }
    EXPECT_EQ(pool->free_blocks(), 5);
    EXPECT_EQ(KvBlockPool::bytes_per_block(kShape, 4), size_t(2 * 4 * 2 * 16 * 4));
}

TEST(KvCache, HalfPrecisionBlocksTakeHalfTheBytesAndOtherTypesAreRefused) {
    for (DType type : {DType::F16, DType::BF16}) {
        KvCacheShape shape = kShape;
        shape.dtype = type;
        EXPECT_EQ(KvBlockPool::bytes_per_block(shape, 4),
                  KvBlockPool::bytes_per_block(kShape, 4) / 2);
        KvBlockPool pool(shape, 4, 3);
        EXPECT_EQ(pool.keys(0, nullptr, 0).dtype, type);
    }
    for (DType type : {DType::I32, DType::Q8_0}) {
        KvCacheShape shape = kShape;
        shape.dtype = type;
        EXPECT_THROW(KvBlockPool(shape, 4, 3), Error) << dtype_name(type);
    }
}

// Fills `cache` with tokens' positions (their rows are not what is tested here) and publishes
// its full blocks.
void compute(KvCache& cache, std::span<const int32_t> tokens) {
    ASSERT_TRUE(cache.reserve(int64_t(tokens.size())));
    cache.commit(int64_t(tokens.size()) - cache.length());
    cache.publish(tokens);
}

void expect_no_block_held(const KvBlockPool& pool) {
    const KvPoolStats s = pool.stats();
    EXPECT_EQ(s.used, 0);
    EXPECT_EQ(s.free + s.cached, s.total);
    EXPECT_EQ(pool.free_blocks(), s.total);
}

TEST(PrefixCache, FullBlocksAreFoundByTheirWholeChain) {
    TANDEM_SEEDED(seed);
    std::mt19937_64 rng(seed);
    auto pool = std::make_shared<KvBlockPool>(kShape, 4, 16);
    const std::vector<int32_t> tokens =
        test::random_tokens(rng, 11, 50000);  // 2 full blocks and 3 positions
    {
        KvCache a(pool, 40);
        compute(a, tokens);
        EXPECT_EQ(pool->stats().used, 3);
        auto attach = [&](std::vector<int32_t> ids) {
            KvCache b(pool, 40);
            const int64_t n = b.attach_cached_prefix(ids);
            EXPECT_EQ(b.length(), n);
            for (int64_t i = 0; i < b.blocks(); ++i)  // the very blocks of a
                EXPECT_EQ(b.keys(0).block_table[i], a.keys(0).block_table[i]);
            return n;
        };
        std::vector<int32_t> longer = tokens;
        longer.push_back(7);
        EXPECT_EQ(attach(longer), 8);  // the partly filled third block is a's alone
        // At least the last token is computed: 8 tokens take one cached block, 9 take two.
        EXPECT_EQ(attach({tokens.begin(), tokens.begin() + 8}), 4);
        EXPECT_EQ(attach({tokens.begin(), tokens.begin() + 9}), 8);
        std::vector<int32_t> other = tokens;
        other[5] ^= 1;  // the second block differs
        EXPECT_EQ(attach(other), 4);
        other = tokens;
        other[0] ^= 1;  // the second block is the same, but not what comes before it
        EXPECT_EQ(attach(other), 0);
        EXPECT_EQ(pool->stats().used, 3);
    }
    expect_no_block_held(*pool);
    EXPECT_EQ(pool->stats().cached, 2);
}

TEST(PrefixCache, SharedBlocksAreCountedAndTheLeastRecentlyReleasedGoesFirst) {
    TANDEM_SEEDED(seed);
    std::mt19937_64 rng(seed);
    auto pool = std::make_shared<KvBlockPool>(kShape, 2, 4);
    const std::vector<int32_t> x = test::random_tokens(rng, 5, 50000),
                               y = test::random_tokens(rng, 5, 50000);
    {
        KvCache a(pool, 8), b(pool, 8);
        compute(a, {x.begin(), x.begin() + 4});
        {
            KvCache shared(pool, 8);
            EXPECT_EQ(shared.attach_cached_prefix(x), 4);
            EXPECT_EQ(pool->stats().used, 2);  // held twice, counted once
        }
        EXPECT_EQ(pool->stats().used, 2);  // a still holds them
        compute(b, {y.begin(), y.begin() + 4});
        EXPECT_EQ(pool->free_blocks(), 0);
        KvCache c(pool, 8);
        EXPECT_FALSE(c.reserve(1));  // every block is held
        a.clear();
        b.clear();
    }
    // Released a then b, each last block first: LRU order x1, x0, y1, y0.
    EXPECT_EQ(pool->stats().cached, 4);
    KvCache d(pool, 8);
    ASSERT_TRUE(d.reserve(2));  // evicts x1
    {
        KvCache probe(pool, 8);
        EXPECT_EQ(probe.attach_cached_prefix(x), 2);  // x0 is still there
    }                                                 // and now the most recently released
    ASSERT_TRUE(d.reserve(4));                        // evicts y1
    KvCache e(pool, 8);
    EXPECT_EQ(e.attach_cached_prefix(y), 2);
    EXPECT_EQ(pool->stats().cached, 1);  // x0
    KvCache f(pool, 8);
    EXPECT_EQ(f.attach_cached_prefix(x), 2);
    EXPECT_EQ(pool->stats().used, 4);
    EXPECT_FALSE(f.reserve(3));  // nothing left to evict
}

TEST(PrefixCache, ForksShareFullBlocksAndEveryBlockComesBack) {
    TANDEM_SEEDED(seed);
    std::mt19937_64 rng(seed);
    auto pool = std::make_shared<KvBlockPool>(kShape, 4, 6);
    const std::vector<int32_t> prompt = test::random_tokens(rng, 10, 50000);
    {
        KvCache first(pool, 12);
        compute(first, prompt);
        std::vector<std::unique_ptr<KvCache>> samples;
        for (int i = 0; i < 3; ++i) {
            samples.push_back(std::make_unique<KvCache>(pool, 12));
            ASSERT_TRUE(samples.back()->share_prefix_from(first, 10));
        }
        EXPECT_EQ(pool->stats().used, 6);  // 2 shared + 4 partly filled blocks
        KvCache fifth(pool, 12);
        EXPECT_FALSE(fifth.share_prefix_from(first, 10));  // no block for its copy
        EXPECT_EQ(fifth.blocks(), 0);
        EXPECT_TRUE(fifth.share_prefix_from(first, 8));  // whole blocks need none
        samples[0]->clear();
        EXPECT_EQ(pool->stats().used, 5);
    }
    expect_no_block_held(*pool);
}

TEST(PrefixCache, AResetForgetsEveryBlockAndOlderRowsAreNotPublished) {
    TANDEM_SEEDED(seed);
    std::mt19937_64 rng(seed);
    auto pool = std::make_shared<KvBlockPool>(kShape, 4, 8);
    const std::vector<int32_t> tokens = test::random_tokens(rng, 9, 50000);
    KvCache before(pool, 16);
    compute(before, {tokens.begin(), tokens.begin() + 4});
    {
        KvCache a(pool, 16);
        compute(a, tokens);
    }
    EXPECT_EQ(pool->stats().cached, 1);  // a's second block; the first is before's, still held
    pool->reset_prefix_cache();
    EXPECT_EQ(pool->stats().cached, 0);
    KvCache b(pool, 16);
    EXPECT_EQ(b.attach_cached_prefix(tokens), 0);
    // Rows computed partly before the reset stay out of the cache.
    compute(before, tokens);
    KvCache c(pool, 16);
    EXPECT_EQ(c.attach_cached_prefix(tokens), 0);
    c.clear();
    // Rows computed after it go in.
    compute(b, tokens);
    EXPECT_EQ(c.attach_cached_prefix(tokens), 8);
    const KvPoolStats s = pool->stats();
    EXPECT_EQ(s.used + s.cached + s.free, s.total);
}

class KvCacheTypes : public ::testing::TestWithParam<DType> {};

TEST_P(KvCacheTypes, AttentionOverScatteredBlocksEqualsContiguous) {
    TANDEM_SEEDED(seed);
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> normal;
    const int64_t n = 23, heads = 4, kv = 2, dim = 8;
    KvCacheShape shape = kShape;
    shape.dtype = GetParam();
    auto pool = std::make_shared<KvBlockPool>(shape, 4, 16);
    // Take blocks in a scrambled order so the sequence's blocks are not adjacent.
    std::vector<std::unique_ptr<KvCache>> fillers;
    for (int i = 0; i < 5; ++i) {
        fillers.push_back(std::make_unique<KvCache>(pool, 4));
        ASSERT_TRUE(fillers.back()->reserve(4));
    }
    fillers.erase(fillers.begin() + 1);
    fillers.erase(fillers.begin() + 2);
    KvCache paged(pool, n);
    ASSERT_TRUE(paged.reserve(n));
    KvCache flat({.n_layers = 2,
                  .n_kv_heads = kv,
                  .head_dim = dim,
                  .v_head_dim = dim,
                  .capacity = n,
                  .dtype = GetParam()});
    std::vector<float> k(size_t(n * kv * dim)), v(k.size());
    for (float& x : k)
        x = normal(rng);
    for (float& x : v)
        x = normal(rng);
    for (KvCache* c : {&paged, &flat}) {
        write_rows(c->keys(1), 0, k.data(), 10);  // in two writes, across a block edge
        write_rows(c->keys(1), 10, k.data() + 10 * kv * dim, n - 10);
        write_rows(c->values(1), 0, v.data(), n);
    }
    OwnedTensor q = make_tensor(DType::F32, {3, heads, dim});
    for (int64_t i = 0; i < q.view.numel(); ++i)
        q.view.data_as<float>()[i] = normal(rng);
    ThreadPool threads({.n_threads = 2, .pin = false});
    auto run = [&](const KvCache& c) {
        OwnedTensor out = make_tensor(DType::F32, {3, heads, dim});
        cpu::attention({.q = q.view,
                        .k_cache = c.keys(1),
                        .v_cache = c.values(1),
                        .out = out.view,
                        .start_pos = n - 3,
                        .scale = 0.3f},
                       threads);
        return std::vector<float>(out.view.data_as<float>(),
                                  out.view.data_as<float>() + out.view.numel());
    };
    EXPECT_EQ(run(paged), run(flat));
    // A fork shares the full blocks and copies the partly filled last one.
    paged.commit(n);
    KvCache fork(pool, n);
    ASSERT_TRUE(fork.share_prefix_from(paged, n));
    EXPECT_EQ(fork.length(), n);
    EXPECT_EQ(run(fork), run(flat));
    EXPECT_EQ(fork.keys(1).block_table[0], paged.keys(1).block_table[0]);
    EXPECT_NE(fork.keys(1).block_table[5], paged.keys(1).block_table[5]);
}

INSTANTIATE_TEST_SUITE_P(KvTypes, KvCacheTypes,
                         ::testing::Values(DType::F32, DType::F16, DType::BF16),
                         [](const auto& param_info) {
                             return std::string(dtype_name(param_info.param));
                         });

}  // namespace
}  // namespace tandem

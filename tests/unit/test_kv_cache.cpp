// The paged KV cache: blocks come from and go back to the pool, a full pool refuses politely,
// f16/bf16 blocks take half the bytes, and attention over scattered blocks equals attention over
// one contiguous cache in every KV type.
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
    // A fork copies the rows.
    paged.commit(n);
    KvCache fork(pool, n);
    fork.copy_prefix_from(paged, n);
    EXPECT_EQ(fork.length(), n);
    EXPECT_EQ(run(fork), run(flat));
}

INSTANTIATE_TEST_SUITE_P(KvTypes, KvCacheTypes,
                         ::testing::Values(DType::F32, DType::F16, DType::BF16),
                         [](const auto& param_info) {
                             return std::string(dtype_name(param_info.param));
                         });

}  // namespace
}  // namespace tandem

// Expert cache: the MRS update rule and eviction order, LRU/LFU/static, pinning, quotas, the
// budget invariant under random traffic, and the counters.
#include <gtest/gtest.h>

#include <random>

#include "cache/expert_cache.h"
#include "kernels/error.h"
#include "tests/test_util.h"

namespace tandem {
namespace {

ExpertCacheConfig config(CachePolicyKind kind, int64_t capacity, int64_t n_layers = 2,
                         int64_t n_experts = 8, int64_t k = 2) {
    return {.policy = {.kind = kind,
                       .n_layers = n_layers,
                       .n_experts = n_experts,
                       .n_experts_active = k},
            .expert_bytes = 100,
            .capacity = capacity};
}

TEST(ExpertCache, SlotsFromBudget) {
    EXPECT_EQ(expert_slots_for_bytes(1050, 100), 10);
    EXPECT_EQ(expert_slots_for_ratio(0.25, 16, 64), 256);
    EXPECT_EQ(expert_slots_for_ratio(0.75, 16, 64), 768);
    EXPECT_THROW(expert_slots_for_ratio(1.5, 16, 64), Error);
    EXPECT_THROW(expert_slots_for_bytes(10, 0), Error);
}

TEST(ExpertCache, MrsUpdateRuleScatteredByExpertId) {
    // p = 2k = 2: of the three scored experts only the two highest enter the average.
    ExpertCache cache(config(CachePolicyKind::Mrs, 4, 1, 8, 1));
    const std::vector<int32_t> ids = {5, 2, 7};
    const std::vector<float> scores = {0.25f, 0.5f, 0.125f};
    cache.observe_scores(0, ids, scores);
    EXPECT_DOUBLE_EQ(cache.priority({0, 2}), 0.25);   // 0.5 * 0.5
    EXPECT_DOUBLE_EQ(cache.priority({0, 5}), 0.125);  // 0.5 * 0.25
    EXPECT_DOUBLE_EQ(cache.priority({0, 7}), 0.0);    // outside the top-p
    const std::vector<int32_t> ids2 = {7, 2};
    const std::vector<float> scores2 = {1.0f, 0.25f};
    cache.observe_scores(0, ids2, scores2);
    EXPECT_DOUBLE_EQ(cache.priority({0, 7}), 0.5);                 // 0.5*1 + 0.5*0
    EXPECT_DOUBLE_EQ(cache.priority({0, 2}), 0.5 * 0.25 + 0.125);  // 0.5*0.25 + 0.5*0.25
    EXPECT_DOUBLE_EQ(cache.priority({0, 5}), 0.0625);              // decayed only
}

TEST(ExpertCache, MrsPrefillAveragesScoresOverTheStep) {
    ExpertCache cache(config(CachePolicyKind::Mrs, 4, 1, 8, 2));
    // Two tokens, top-2: expert 3 picked by both, 1 and 6 by one each.
    const std::vector<int32_t> experts = {3, 1, 3, 6};
    const std::vector<float> weights = {0.5f, 0.25f, 0.25f, 0.125f};
    cache.observe_step(0, 2, 2, experts, weights);
    EXPECT_DOUBLE_EQ(cache.priority({0, 3}), 0.5 * 0.375);
    EXPECT_DOUBLE_EQ(cache.priority({0, 1}), 0.5 * 0.125);
    EXPECT_DOUBLE_EQ(cache.priority({0, 6}), 0.5 * 0.0625);
}

TEST(ExpertCache, MrsEvictsTheLowestScore) {
    ExpertCache cache(config(CachePolicyKind::Mrs, 3, 2, 8, 2));
    for (int e : {0, 1, 2})
        ASSERT_TRUE(cache.insert({0, e}, InsertReason::Demand).inserted);
    const std::vector<int32_t> ids = {0, 1, 2};
    const std::vector<float> scores = {0.3f, 0.1f, 0.2f};
    cache.observe_scores(0, ids, scores);
    // Layer 1's newcomers: 0 scores just above the weakest resident, 1 well above everyone.
    const std::vector<int32_t> ids1 = {0, 1};
    const std::vector<float> scores1 = {0.12f, 0.6f};
    cache.observe_scores(1, ids1, scores1);
    // Expert 1 of layer 0 has the lowest score (0.05); then layer 1's expert 0 (0.06), whichever
    // layer it is in.
    EXPECT_EQ(cache.victim_for({1, 0}), (ExpertKey{0, 1}));
    EXPECT_EQ(cache.insert({1, 0}, InsertReason::Demand).evicted, (ExpertKey{0, 1}));
    EXPECT_EQ(cache.insert({1, 1}, InsertReason::Demand).evicted, (ExpertKey{1, 0}));
    EXPECT_EQ(cache.total().evictions, 2);
    EXPECT_EQ(cache.total().bytes_moved, 500);
}

TEST(ExpertCache, AdmissionOnlyWhenTheNewcomerOutscoresTheVictim) {
    // A full MRS cache of well-scored experts: a newcomer scored below the weakest resident is
    // refused (computed where it is, not cached), one scored above replaces it. Demand copies and
    // prefetches follow the same rule; the warm-up fill and free slots are not gated.
    ExpertCache cache(config(CachePolicyKind::Mrs, 2, 1, 8, 2));
    for (int e : {0, 1})
        ASSERT_TRUE(cache.insert({0, e}, InsertReason::Demand).inserted);
    const std::vector<int32_t> ids = {0, 1, 2, 3};
    const std::vector<float> scores = {0.4f, 0.3f, 0.2f, 0.1f};
    cache.observe_scores(0, ids, scores);
    for (InsertReason reason : {InsertReason::Demand, InsertReason::Prefetch}) {
        const InsertResult weak = cache.insert({0, 2}, reason);
        EXPECT_FALSE(weak.inserted);
        EXPECT_TRUE(weak.refused);
        EXPECT_FALSE(weak.evicted.has_value());
        EXPECT_FALSE(cache.resident({0, 2}));
        EXPECT_FALSE(cache.admits_now({0, 2}));
    }
    EXPECT_EQ(cache.total().evictions, 0);
    EXPECT_EQ(cache.total().bytes_moved, 200) << "a refused copy moves nothing into the cache";
    const std::vector<int32_t> ids2 = {2};
    const std::vector<float> scores2 = {1.0f};
    cache.observe_scores(0, ids2, scores2);  // 2: 0.55; 0: 0.2, 1: 0.15
    EXPECT_TRUE(cache.admits_now({0, 2}));
    const InsertResult strong = cache.insert({0, 2}, InsertReason::Demand);
    EXPECT_TRUE(strong.inserted);
    EXPECT_FALSE(strong.refused);
    EXPECT_EQ(strong.evicted, (ExpertKey{0, 1}));
}

TEST(ExpertCache, LruAndLfuOrder) {
    ExpertCache lru(config(CachePolicyKind::Lru, 2));
    ExpertCache lfu(config(CachePolicyKind::Lfu, 2));
    for (ExpertCache* c : {&lru, &lfu}) {
        c->insert({0, 0}, InsertReason::Demand);
        c->insert({0, 1}, InsertReason::Demand);
    }
    const std::vector<int32_t> a = {0}, b = {1};
    for (ExpertCache* c : {&lru, &lfu}) {
        c->record_access(0, a);
        c->record_access(0, a);
        c->record_access(0, b);  // 1 is the most recent, 0 the most frequent
        const std::vector<int32_t> newcomer = {5};
        c->record_access(1, newcomer);  // a miss, then its demand copy below
    }
    EXPECT_EQ(lru.insert({1, 5}, InsertReason::Demand).evicted, (ExpertKey{0, 0}));
    EXPECT_EQ(lfu.insert({1, 5}, InsertReason::Demand).evicted, (ExpertKey{0, 1}));
    EXPECT_EQ(lru.counters(0).hits, 3);
    EXPECT_EQ(lru.counters(0).misses, 0);
    EXPECT_EQ(lru.counters(1).misses, 1);
}

TEST(ExpertCache, StaticAdmitsOnlyItsSet) {
    auto c = config(CachePolicyKind::Static, 2);
    c.policy.static_set = {{0, 3}, {1, 4}};
    ExpertCache cache(c);
    EXPECT_FALSE(cache.insert({0, 1}, InsertReason::Demand).inserted);
    EXPECT_TRUE(cache.insert({0, 3}, InsertReason::Warmup).inserted);
    EXPECT_TRUE(cache.insert({1, 4}, InsertReason::Warmup).inserted);
    EXPECT_EQ(cache.total().bytes_moved, 0) << "warm-up copies are not traffic";
    EXPECT_EQ(cache.occupancy(), 2);
}

TEST(ExpertCache, PinnedExpertsAreNeverEvicted) {
    ExpertCache cache(config(CachePolicyKind::Lru, 2));
    cache.insert({0, 0}, InsertReason::Demand);
    cache.insert({0, 1}, InsertReason::Demand);
    const std::vector<ExpertKey> pin = {{0, 0}, {0, 1}};
    cache.set_pinned(pin);
    EXPECT_FALSE(cache.insert({1, 2}, InsertReason::Demand).inserted);
    EXPECT_FALSE(cache.victim_for({1, 2}).has_value());
    const std::vector<ExpertKey> pin_one = {{0, 0}};
    cache.set_pinned(pin_one);
    EXPECT_FALSE(cache.pinned({0, 1}));
    const std::vector<int32_t> newcomer = {2};
    cache.record_access(1, newcomer);
    EXPECT_EQ(cache.insert({1, 2}, InsertReason::Demand).evicted, (ExpertKey{0, 1}));
}

TEST(ExpertCache, BudgetQuotasAndPinsHoldUnderRandomTraffic) {
    TANDEM_SEEDED(seed);
    std::mt19937_64 rng(seed);
    for (CachePolicyKind kind :
         {CachePolicyKind::Mrs, CachePolicyKind::Lru, CachePolicyKind::Lfu}) {
        auto c = config(kind, 10, 4, 16, 2);
        const bool quotas = rng() % 2;
        if (quotas) c.layer_quota = {4, 2, 3, 4};
        ExpertCache cache(c);
        int64_t inserted = 0;
        for (int step = 0; step < 2000; ++step) {
            const int32_t layer = int32_t(rng() % 4);
            std::vector<int32_t> ids = {int32_t(rng() % 16), int32_t(rng() % 16)};
            if (ids[0] == ids[1]) ids.pop_back();
            std::vector<float> scores(ids.size());
            for (float& s : scores)
                s = float(rng() % 1000) / 1000.0f;
            cache.observe_scores(layer, ids, scores);
            cache.record_access(layer, ids);
            std::vector<ExpertKey> pins;
            for (int32_t e : ids)
                pins.push_back({layer, e});
            cache.set_pinned(pins);
            for (int32_t e : ids) {
                const InsertResult r = cache.insert({layer, e}, InsertReason::Demand);
                inserted += r.inserted;
                if (r.evicted) {
                    EXPECT_FALSE(r.evicted->layer == layer &&
                                 std::find(ids.begin(), ids.end(), r.evicted->expert) != ids.end())
                        << "evicted a pinned expert";
                }
            }
            ASSERT_LE(cache.occupancy(), cache.capacity());
            if (quotas) {
                for (int32_t l = 0; l < 4; ++l)
                    ASSERT_LE(cache.layer_occupancy(l), c.layer_quota[size_t(l)]);
            }
            ASSERT_EQ(int64_t(cache.resident_experts().size()), cache.occupancy());
        }
        const CacheCounters t = cache.total();
        EXPECT_EQ(t.bytes_moved, inserted * 100);
        EXPECT_EQ(t.evictions, inserted - cache.occupancy());
    }
}

TEST(ExpertCache, PrefetchUsedAndWastedCounters) {
    ExpertCache cache(config(CachePolicyKind::Lru, 2));
    cache.insert({0, 0}, InsertReason::Prefetch);
    cache.insert({0, 1}, InsertReason::Prefetch);
    const std::vector<int32_t> used = {0};
    cache.record_access(0, used);
    cache.record_access(0, used);  // a second hit is not a second use
    const std::vector<int32_t> miss = {0};
    cache.record_access(1, miss);
    cache.insert({1, 0}, InsertReason::Demand);  // evicts (0, 1), never used
    const CacheCounters t = cache.total();
    EXPECT_EQ(t.prefetch_inserts, 2);
    EXPECT_EQ(t.prefetch_used, 1);
    EXPECT_EQ(t.prefetch_wasted, 1);
    EXPECT_THROW(cache.insert({2, 0}, InsertReason::Demand), Error);
    EXPECT_THROW(parse_cache_policy("fifo"), Error);
}

}  // namespace
}  // namespace tandem

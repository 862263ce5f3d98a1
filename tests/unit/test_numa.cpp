// NUMA tensor parallelism of the routed experts (kernels/cpu/numa_experts.h) on synthetic hwloc
// topologies, which run the multi-node code on any machine: the slice plan, the topology view,
// the per-node pools, and the sliced kernel against the single-pool cpu::moe_experts for every
// weight family (f32, bf16, q8_0, q4_k) with skip masks, idle experts, one hot expert, one token
// and uneven slices. The sliced kernel only reorders the float sums of the down projection, so
// the tolerance is a few float roundings of the output's scale.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <random>
#include <set>
#include <thread>

#include "kernels/cpu/numa_experts.h"
#include "kernels/cpu/quant.h"
#include "kernels/error.h"
#include "tests/test_util.h"

namespace tandem {
namespace {

// |numa - single pool| <= kRelTolerance * max |single pool output| per element: a reordered
// sum of ffn_dim products; measured up to 5e-7 (a few roundings) over f32, bf16, q8_0, q4_k.
constexpr double kRelTolerance = 1e-5;

// Checks that `slices` is a partition of [0, ffn) with inner bounds on granule multiples.
void expect_partition(const std::vector<cpu::FfnSlice>& slices, int64_t ffn, int64_t granule) {
    ASSERT_FALSE(slices.empty());
    int64_t at = 0;
    for (size_t k = 0; k < slices.size(); ++k) {
        const cpu::FfnSlice& s = slices[k];
        EXPECT_EQ(s.begin, at) << "slice " << k << " does not start where the previous ended";
        EXPECT_LE(s.begin, s.end) << "slice " << k;
        EXPECT_EQ(s.begin % granule, 0) << "slice " << k << " begins off a block bound";
        if (s.end != ffn) {
            EXPECT_EQ(s.end % granule, 0) << "slice " << k << " ends off a bound";
        }
        at = s.end;
    }
    EXPECT_EQ(at, ffn) << "the slices do not cover ffn_dim";
}

TEST(NumaPlan, SlicesPartitionFfnOnBlockBounds) {
    TANDEM_SEEDED(seed);
    std::mt19937_64 rng(seed);
    for (int trial = 0; trial < 2000; ++trial) {
        const int64_t granule = std::array<int64_t, 4>{1, 32, 256, 7}[size_t(rng() % 4)];
        const int64_t ffn = int64_t(rng() % 4000);
        std::vector<int> weight(1 + rng() % 5);
        for (int& w : weight)
            w = 1 + int(rng() % 8);
        const auto slices = cpu::plan_ffn_slices(ffn, granule, weight);
        ASSERT_EQ(slices.size(), weight.size());
        expect_partition(slices, ffn, granule);
        // Equal weights: whole granules, at most one apart.
        const std::vector<int> equal(weight.size(), 1);
        const auto even = cpu::plan_ffn_slices(ffn, granule, equal);
        expect_partition(even, ffn, granule);
        int64_t lo = INT64_MAX, hi = 0;
        for (const cpu::FfnSlice& s : even) {
            const int64_t granules = (s.size() + granule - 1) / granule;
            lo = std::min(lo, granules);
            hi = std::max(hi, granules);
        }
        EXPECT_LE(hi - lo, 1) << "ffn " << ffn << " granule " << granule;
        if (HasFailure()) break;
    }
}

TEST(NumaPlan, NodesWithoutASliceWhenThereAreFewerBlocksThanNodes) {
    const std::vector<int> three(3, 1);
    auto nonempty = [](const std::vector<cpu::FfnSlice>& slices) {
        return std::count_if(slices.begin(), slices.end(),
                             [](const cpu::FfnSlice& s) { return !s.empty(); });
    };
    auto one = cpu::plan_ffn_slices(256, 256, three);
    expect_partition(one, 256, 256);
    EXPECT_EQ(nonempty(one), 1);
    auto two = cpu::plan_ffn_slices(512, 256, three);
    expect_partition(two, 512, 256);
    EXPECT_EQ(nonempty(two), 2);
    auto uneven = cpu::plan_ffn_slices(768, 256, std::vector<int>(2, 1));  // 1 and 2 blocks
    EXPECT_EQ(uneven[0].size() + uneven[1].size(), 768);
    EXPECT_EQ(std::abs(uneven[0].size() - uneven[1].size()), 256);
    // A partial last granule (f32 ffn 100 in granules of 32) goes to the last node.
    auto tail = cpu::plan_ffn_slices(100, 32, std::vector<int>(2, 1));
    expect_partition(tail, 100, 32);
    EXPECT_EQ(tail[1].end, 100);
    // In proportion to the nodes' threads.
    auto weighted = cpu::plan_ffn_slices(32 * 12, 32, std::vector<int>{1, 3});
    EXPECT_EQ(weighted[0].size(), 32 * 3);
    EXPECT_EQ(weighted[1].size(), 32 * 9);
    EXPECT_EQ(nonempty(cpu::plan_ffn_slices(0, 32, three)), 0);
    EXPECT_THROW(cpu::plan_ffn_slices(64, 0, three), Error);
    EXPECT_THROW(cpu::plan_ffn_slices(64, 32, {}), Error);
}

TEST(NumaPlan, GranuleIsTheDownWeightsBlockAtLeast32) {
    auto granule_of = [](DType down) {
        const cpu::ExpertWeights w{.down = Tensor(nullptr, down, {1, 1})};
        return cpu::ffn_slice_granule({&w, 1});
    };
    EXPECT_EQ(granule_of(DType::Q4_K), 256);
    EXPECT_EQ(granule_of(DType::Q6_K), 256);
    EXPECT_EQ(granule_of(DType::Q8_0), 32);
    EXPECT_EQ(granule_of(DType::F32), 32);
    EXPECT_EQ(granule_of(DType::BF16), 32);
}

TEST(NumaPlan, ThreadsAreSharedInProportionToCores) {
    EXPECT_EQ(share_threads(0, {4, 2}), (std::vector<int>{4, 2}));
    EXPECT_EQ(share_threads(6, {4, 2}), (std::vector<int>{4, 2}));
    EXPECT_EQ(share_threads(3, {4, 4}), (std::vector<int>{1, 2}));
    EXPECT_EQ(share_threads(1, {4, 4, 4}), (std::vector<int>{1, 1, 1}));  // one per node at least
}

TEST(NumaTopology, SyntheticTopologiesListNodesAndBindNothing) {
    const auto t = CpuTopology::synthetic("numa:2 core:3 pu:2");
    EXPECT_FALSE(t->is_this_system());
    ASSERT_EQ(t->nodes().size(), 2u);
    EXPECT_EQ(t->core_count(), 6);
    std::set<int> cores;
    for (const NumaNodeCores& node : t->nodes()) {
        EXPECT_EQ(node.cores.size(), 3u);
        cores.insert(node.cores.begin(), node.cores.end());
    }
    EXPECT_EQ(cores.size(), 6u) << "a core listed under two nodes";
    EXPECT_EQ(t->hardware_thread_count(), 12);
    EXPECT_EQ(CpuTopology::synthetic("core:4 pu:1")->hardware_thread_count(), 4);
    // hwloc answers success to binding calls on a made-up machine; ours must say no.
    EXPECT_FALSE(t->pin_current_thread(1));
    NodeMemory m = t->allocate_on_node(1, 10000);
    ASSERT_NE(m.data(), nullptr);
    EXPECT_FALSE(m.bound());
    EXPECT_EQ(reinterpret_cast<uintptr_t>(m.data()) % 4096, 0u);
    std::memset(m.data(), 1, m.bytes());
    EXPECT_THROW(CpuTopology::synthetic("numa:two"), Error);
    const auto system = CpuTopology::system();
    EXPECT_GE(system->nodes().size(), 1u);
    EXPECT_GE(system->core_count(), 1);
}

TEST(NumaPools, NodesRunAtOnceEachOnItsOwnPool) {
    for (const char* desc : {"numa:2 core:1 pu:1", "numa:3 core:2 pu:1"}) {
        SCOPED_TRACE(desc);
        NumaPools pools({.topology = CpuTopology::synthetic(desc)});
        const int n = pools.n_nodes();
        std::vector<int> calls(size_t(n), 0);
        std::vector<std::thread::id> threads(static_cast<size_t>(n));
        std::atomic<int> arrived{0};
        std::atomic<bool> all_met{true};
        pools.run_on_nodes([&](int node, ThreadPool& pool) {
            ++calls[size_t(node)];
            threads[size_t(node)] = std::this_thread::get_id();
            EXPECT_EQ(&pool, &pools.pool(node));
            // A barrier: it only opens if every node's job is running at the same time. The
            // deadline only keeps a broken (serial) implementation from hanging the test.
            arrived.fetch_add(1);
            const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
            while (arrived.load() < n)
                if (std::chrono::steady_clock::now() > deadline) {
                    all_met = false;
                    break;
                }
            std::atomic<int64_t> sum{0};
            pool.run(100, [&](int64_t i) { sum += i; });
            EXPECT_EQ(sum.load(), 4950);
        });
        EXPECT_TRUE(all_met.load()) << "the nodes' jobs ran one after another";
        EXPECT_EQ(calls, std::vector<int>(size_t(n), 1));
        EXPECT_EQ(threads[0], std::this_thread::get_id()) << "node 0 runs on the caller";
        EXPECT_EQ(std::set<std::thread::id>(threads.begin(), threads.end()).size(), size_t(n));
        EXPECT_THROW(pools.run_on_nodes([&](int node, ThreadPool&) {
            if (node == n - 1) fail("node ", node);
        }),
                     Error);
    }
}

// One layer of random experts in `type`, sliced on a synthetic topology and run against
// moe_experts on one pool; with `biased`, gpt-oss's experts (a bias on every matrix and the
// clamped activation).
struct Layer {
    int64_t hidden = 0, ffn = 0, n_experts = 0;
    DType type = DType::F32;
    std::vector<std::vector<uint8_t>> storage;  // [3 * n_experts]
    std::vector<std::vector<float>> biases;     // [3 * n_experts] when biased
    std::vector<cpu::ExpertWeights> experts;
    cpu::GluOptions glu;

    Layer(DType type_, int64_t hidden_, int64_t ffn_, int64_t n_experts_, std::mt19937_64& rng,
          bool biased = false)
        : hidden(hidden_), ffn(ffn_), n_experts(n_experts_), type(type_) {
        if (biased) glu = {.limit = 7.0f, .alpha = 1.702f};
        auto matrix = [&](int64_t rows, int64_t cols) {
            const auto values = test::random_floats(rng, size_t(rows * cols), 0.2f);
            std::vector<uint8_t>& bytes =
                storage.emplace_back(size_t(rows * row_bytes(type, cols)));
            for (int64_t r = 0; r < rows; ++r) {
                const float* from = values.data() + r * cols;
                uint8_t* to = bytes.data() + r * row_bytes(type, cols);
                if (type == DType::F32) {
                    std::memcpy(to, from, size_t(cols) * sizeof(float));
                } else if (type == DType::BF16) {
                    for (int64_t c = 0; c < cols; ++c) {
                        const uint16_t b = f32_to_bf16(from[c]);
                        std::memcpy(to + 2 * c, &b, 2);
                    }
                } else {
                    cpu::quantize_row(type, from, to, cols);
                }
            }
            return Tensor(bytes.data(), type, {rows, cols});
        };
        auto bias = [&](int64_t n) {
            std::vector<float>& b = biases.emplace_back(test::random_floats(rng, size_t(n), 0.5f));
            return Tensor(b.data(), DType::F32, {n});
        };
        storage.reserve(size_t(3 * n_experts));
        biases.reserve(size_t(3 * n_experts));
        for (int64_t e = 0; e < n_experts; ++e) {
            cpu::ExpertWeights w;
            w.gate = matrix(ffn, hidden);
            w.up = matrix(ffn, hidden);
            w.down = matrix(hidden, ffn);
            if (biased) {
                w.gate_bias = bias(ffn);
                w.up_bias = bias(ffn);
                w.down_bias = bias(hidden);
            }
            experts.push_back(w);
        }
    }
};

struct Case {
    const char* name;
    int64_t n_tokens;
    std::vector<int32_t> offsets, tokens;  // per expert, as group_by_expert makes them
    std::vector<uint8_t> skip;
};

// n_experts = 5 in every case.
std::vector<Case> routing_cases(std::mt19937_64& rng) {
    std::vector<Case> cases = {
        {"one token on two experts", 1, {0, 1, 1, 2, 2, 2}, {0, 0}, {}},
        {"all tokens on one expert", 4, {0, 0, 0, 4, 4, 4}, {0, 1, 2, 3}, {}},
        {"idle expert 1, expert 3 skipped",
         3,
         {0, 2, 2, 4, 6, 7},
         {0, 2, 0, 1, 1, 2, 0},
         {0, 0, 0, 1, 0}},
        {"every expert skipped", 2, {0, 1, 2, 3, 4, 4}, {0, 1, 0, 1}, {1, 1, 1, 1, 1}},
    };
    // A random top-2 routing of 9 tokens with a random skip mask.
    Case r{"random top-2 with skips", 9, {}, {}, {}};
    std::vector<std::vector<int32_t>> per_expert(5);
    for (int32_t t = 0; t < 9; ++t) {
        const int32_t a = int32_t(rng() % 5), b = int32_t((a + 1 + rng() % 4) % 5);
        per_expert[size_t(a)].push_back(t);
        per_expert[size_t(b)].push_back(t);
    }
    r.offsets.push_back(0);
    for (const auto& tokens : per_expert) {
        r.tokens.insert(r.tokens.end(), tokens.begin(), tokens.end());
        r.offsets.push_back(int32_t(r.tokens.size()));
        r.skip.push_back(uint8_t(rng() % 3 == 0));
    }
    cases.push_back(r);
    return cases;
}

void expect_numa_matches_single_pool(const Layer& layer, const char* topology, uint64_t seed) {
    SCOPED_TRACE(::testing::Message()
                 << dtype_name(layer.type) << " hidden " << layer.hidden << " ffn " << layer.ffn
                 << " on " << topology << (layer.glu.limit > 0 ? ", biased (gpt-oss)" : ""));
    std::mt19937_64 rng(seed);
    ThreadPool single({.n_threads = 2, .pin = false});
    NumaPools pools({.topology = CpuTopology::synthetic(topology), .pin = false});
    const cpu::NumaExpertSlices slices(layer.experts, pools);
    ASSERT_EQ(slices.n_nodes(), pools.n_nodes());
    std::vector<cpu::FfnSlice> plan;
    for (int k = 0; k < slices.n_nodes(); ++k)
        plan.push_back(slices.slice(k));
    expect_partition(plan, layer.ffn, cpu::ffn_slice_granule(layer.experts));
    cpu::NumaMoeScratch scratch;
    for (const Case& c : routing_cases(rng)) {
        SCOPED_TRACE(c.name);
        const auto x = test::random_floats(rng, size_t(c.n_tokens * layer.hidden));
        // `out` is accumulated into: start both from the same random values.
        const auto start = test::random_floats(rng, size_t(c.n_tokens * layer.hidden));
        std::vector<float> weights(c.tokens.size());
        for (float& w : weights)
            w = std::uniform_real_distribution<float>(0.1f, 1.0f)(rng);
        std::vector<float> want = start, got = start, xs = x;
        const Shape shape{c.n_tokens, layer.hidden};
        cpu::MoeExpertsArgs args{.x = Tensor(xs.data(), DType::F32, shape),
                                 .out = Tensor(want.data(), DType::F32, shape),
                                 .experts = layer.experts,
                                 .offsets = c.offsets,
                                 .token_index = c.tokens,
                                 .token_weight = weights,
                                 .skip = c.skip,
                                 .glu = layer.glu};
        cpu::moe_experts(args, single);
        args.out = Tensor(got.data(), DType::F32, shape);
        cpu::moe_experts_numa(args, slices, pools, scratch);
        double scale = 0;
        for (size_t i = 0; i < want.size(); ++i)
            scale = std::max(scale, double(std::fabs(want[i] - start[i])));
        for (size_t i = 0; i < want.size(); ++i)
            ASSERT_NEAR(got[i], want[i], kRelTolerance * scale + 1e-6)
                << "element " << i << " (token " << int64_t(i) / layer.hidden << ")";
        if (c.skip.size() == 5 &&
            std::all_of(c.skip.begin(), c.skip.end(), [](uint8_t s) { return s != 0; })) {
            EXPECT_EQ(got, start) << "skipped experts changed the output";
        }
    }
}

TEST(NumaExperts, MatchSinglePoolOnTwoAndThreeNodes) {
    TANDEM_SEEDED(seed);
    std::mt19937_64 rng(seed);
    struct Shape {
        DType type;
        int64_t hidden, ffn;
    };
    const std::vector<Shape> shapes = {
        {DType::F32, 48, 100},    // granules of 32, a partial last one
        {DType::F32, 40, 20},     // one granule: nodes without a slice
        {DType::BF16, 64, 160},   // 5 granules: uneven on 2 and 3 nodes
        {DType::Q8_0, 64, 224},   // 7 blocks of 32
        {DType::Q4_K, 256, 768},  // 3 K-blocks: 2 + 1 on two nodes, one each on three
        {DType::Q4_K, 256, 512},  // 2 K-blocks: three nodes, one of them idle
        {DType::MXFP4, 64, 160},  // gpt-oss's experts (with biases below)
    };
    for (const Shape& s : shapes)
        for (bool biased : {false, true}) {
            const Layer layer(s.type, s.hidden, s.ffn, 5, rng, biased);
            for (const char* topology :
                 {"numa:2 core:1 pu:1", "numa:3 core:1 pu:1", "numa:2 core:2 pu:1"})
                expect_numa_matches_single_pool(layer, topology, rng());
            if (HasFailure()) return;
        }
}

TEST(NumaExperts, SlicesAreCopiesOfTheirRowsAndColumns) {
    TANDEM_SEEDED(seed);
    std::mt19937_64 rng(seed);
    const Layer layer(DType::F32, 8, 100, 2, rng);
    NumaPools pools({.topology = CpuTopology::synthetic("numa:3 core:1 pu:1"), .pin = false});
    const cpu::NumaExpertSlices slices(layer.experts, pools);
    EXPECT_GT(slices.bytes(), size_t(3 * 8 * 100 * 4 * 2) - 1);
    for (int k = 0; k < slices.n_nodes(); ++k) {
        const cpu::FfnSlice s = slices.slice(k);
        for (int64_t e = 0; e < 2; ++e) {
            const cpu::ExpertWeights& src = layer.experts[size_t(e)];
            const cpu::ExpertWeights& dst = slices.experts(k)[size_t(e)];
            ASSERT_EQ(dst.gate.dim(0), s.size());
            ASSERT_EQ(dst.down.dim(1), s.size());
            for (int64_t f = 0; f < s.size(); ++f)
                for (int64_t h = 0; h < 8; ++h) {
                    ASSERT_EQ(dst.gate.data_as<float>()[f * 8 + h],
                              src.gate.data_as<float>()[(s.begin + f) * 8 + h]);
                    ASSERT_EQ(dst.up.data_as<float>()[f * 8 + h],
                              src.up.data_as<float>()[(s.begin + f) * 8 + h]);
                    ASSERT_EQ(dst.down.data_as<float>()[h * s.size() + f],
                              src.down.data_as<float>()[h * 100 + s.begin + f]);
                }
        }
    }
    // Slices of other experts are refused.
    cpu::NumaMoeScratch scratch;
    std::vector<float> x(8), out(8);
    const std::vector<int32_t> offsets = {0, 1}, tokens = {0};
    const std::vector<float> weight = {1.0f};
    EXPECT_THROW(cpu::moe_experts_numa({.x = Tensor(x.data(), DType::F32, {1, 8}),
                                        .out = Tensor(out.data(), DType::F32, {1, 8}),
                                        .experts = std::span(layer.experts).first(1),
                                        .offsets = offsets,
                                        .token_index = tokens,
                                        .token_weight = weight},
                                       slices, pools, scratch),
                 Error);
}

}  // namespace
}  // namespace tandem

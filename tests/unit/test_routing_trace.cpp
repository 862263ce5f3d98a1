// The routing trace reader (both formats, in memory and from ../shared/traces when present)
// and an end-to-end tandem-sim simulation on a tiny trace.
#include <gtest/gtest.h>

#include <filesystem>

#include "kernels/error.h"
#include "scheduler/expert_predictor.h"
#include "scheduler/routing_trace.h"
#include "tests/test_util.h"
#include "tools/sim_engine.h"
#include "tools/sim_models.h"

namespace tandem::sim {
namespace {

TEST(RoutingTrace, ParsesObjectLines) {
    const std::string text =
        R"({"seq": "a/1", "pos": 0, "experts": [[3, 1], [0, 2]], "weights": [[0.5, 0.25], [0.75, 0.125]]})"
        "\n"
        R"({"seq": "b/2", "pos": 0, "experts": [[2, 1], [1, 3]], "weights": [[0.5, 0.5], [0.5, 0.5]]})"
        "\n";
    const RoutingTrace t = parse_routing_trace(text, "mem");
    EXPECT_EQ(t.n_tokens(), 2);
    EXPECT_EQ(t.n_layers, 2);
    EXPECT_EQ(t.top_k, 2);
    EXPECT_TRUE(t.has_weights);
    EXPECT_EQ(t.max_expert, 3);
    EXPECT_EQ(t.seq, (std::vector<int32_t>{0, 1}));
    EXPECT_EQ(t.experts_at(0, 1)[0], 0);
    EXPECT_EQ(t.experts_at(1, 1)[1], 3);
    EXPECT_FLOAT_EQ(t.weights_at(0, 1)[1], 0.125f);
}

TEST(RoutingTrace, ReadsTheRecordedGateLookaheadAndPredictsWithIt) {
    // Two MoE layers, top-2, lookahead depth 1 (the recorder writes -1 past the last layer).
    const std::string text =
        R"({"seq": "a", "experts": [[3, 1], [0, 2]], "lookahead": [[[0, 5]], [[-1, -1]]]})"
        "\n"
        R"({"seq": "a", "experts": [[2, 1], [1, 3]], "lookahead": [[[1, 3]], [[-1, -1]]]})"
        "\n";
    const RoutingTrace t = parse_routing_trace(text, "mem");
    ASSERT_EQ(t.lookahead_depth, 1);
    EXPECT_EQ(t.lookahead_at(0, 0, 1)[1], 5);
    EXPECT_EQ(t.lookahead_at(1, 1, 1)[0], -1);
    EXPECT_EQ(t.max_expert, 5) << "predicted ids count against the model's experts too";
    auto gate = make_expert_predictor("lookahead", t, 8, 1);
    std::vector<int32_t> out;
    gate->predict(0, 0, 1, out);
    EXPECT_EQ(out, (std::vector<int32_t>{0, 5}));
    gate->predict(1, 0, 1, out);
    EXPECT_EQ(out, (std::vector<int32_t>{1, 3}));
    gate->predict(1, 0, 2, out);
    EXPECT_TRUE(out.empty()) << "beyond the recorded depth: no prediction";
    const RoutingTrace plain = parse_routing_trace(R"({"seq": "a", "experts": [[3, 1], [0, 2]]})"
                                                   "\n",
                                                   "plain");
    EXPECT_THROW(make_expert_predictor("lookahead", plain, 8, 1), Error);
}

// The optional full distribution: read by expert id; a trace without it reads as before; it is
// all-or-nothing, one count of experts, probabilities in [0, 1] covering every chosen id.
TEST(RoutingTrace, ReadsTheRoutersFullDistribution) {
    const std::string two_layers =
        R"({"experts": [[1, 0], [2, 3]], "weights": [[0.6, 0.4], [0.5, 0.5]], )";
    const RoutingTrace t = parse_routing_trace(
        two_layers + R"("probs": [[0.3, 0.5, 0.1, 0.1], [0, 0.1, 0.45, 0.45]]})" + "\n" +
            two_layers + R"("probs": [[0.2, 0.6, 0.1, 0.1], [0.1, 0, 0.5, 0.4]]})" + "\n",
        "probs");
    ASSERT_TRUE(t.has_probs());
    EXPECT_EQ(t.n_probs, 4);
    EXPECT_FLOAT_EQ(t.probs_at(0, 0)[1], 0.5f);
    EXPECT_FLOAT_EQ(t.probs_at(1, 1)[3], 0.4f);
    EXPECT_FALSE(parse_routing_trace(two_layers + "\"seq\": \"a\"}\n", "plain").has_probs());
    for (const std::string& bad :
         {two_layers + R"("probs": [[0.3, 0.5, 0.1, 0.1], [0, 0.1, 0.45]]})",        // 4 then 3
          two_layers + R"("probs": [[0.3, 0.5, 0.1, 0.1]]})",                        // one layer
          two_layers + R"("probs": [[0.3, 0.5, 0.1, 1.5], [0, 0.1, 0.45, 0.45]]})",  // > 1
          two_layers + R"("probs": [[0.3, 0.5, 0.2], [0.1, 0.45, 0.45]]})"}) {       // id 3 of 3
        EXPECT_THROW(parse_routing_trace(bad + "\n", "bad"), Error) << bad;
    }
    EXPECT_THROW(parse_routing_trace(two_layers + R"("probs": [[1, 0, 0, 0], [0, 0, 1, 0]]})" +
                                         "\n" + two_layers + "\"seq\": \"a\"}\n",
                                     "some"),
                 Error);
}

TEST(RoutingTrace, ParsesPairLinesAndRenumbersLayers) {
    const std::string text = "[[1, 5], [1, 7], [3, 0], [3, 2]]\n[[1, 6], [1, 5], [3, 1], [3, 2]]\n";
    const RoutingTrace t = parse_routing_trace(text, "mem");
    EXPECT_EQ(t.n_layers, 2);
    EXPECT_EQ(t.top_k, 2);
    EXPECT_FALSE(t.has_weights);
    EXPECT_EQ(t.layer_ids, (std::vector<int32_t>{1, 3}));
    EXPECT_EQ(t.experts_at(1, 0)[0], 6);
    EXPECT_EQ(t.experts_at(1, 1)[0], 1);
}

TEST(RoutingTrace, ErrorsNameSourceAndLine) {
    const std::string text = "[[0, 1], [0, 2]]\n[[0, 1]]\n";
    try {
        parse_routing_trace(text, "t.jsonl");
        FAIL() << "expected an error";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("t.jsonl: line 2"), std::string::npos) << e.what();
    }
    EXPECT_THROW(parse_routing_trace("{\"experts\": 3}\n", "x"), Error);
    EXPECT_THROW(parse_routing_trace("", "x"), Error);
    EXPECT_THROW(read_routing_trace("/nonexistent/trace.jsonl.gz"), Error);
}

std::string shared_trace(const std::string& name) {
    return test::shared_dir() + "/traces/" + name;
}

TEST(RoutingTrace, ReadsTheSharedOlmoeDevTrace) {
    const std::string path = shared_trace("olmoe-decode-dev.jsonl.gz");
    if (!std::filesystem::exists(path)) GTEST_SKIP() << path << " not present (../shared/traces)";
    const RoutingTrace t = read_routing_trace(path, 300);
    EXPECT_EQ(t.n_tokens(), 300);
    EXPECT_EQ(t.n_layers, 16);
    EXPECT_EQ(t.top_k, 8);
    EXPECT_TRUE(t.has_weights);
    EXPECT_LT(t.max_expert, 64);
    // Probabilities of a token's top-8 are sorted and sum to at most 1 (no renormalisation).
    float sum = 0;
    for (int i = 0; i < 8; ++i)
        sum += t.weights_at(0, 0)[i];
    EXPECT_LE(sum, 1.0f + 1e-3f);
    EXPECT_GE(t.weights_at(0, 0)[0], t.weights_at(0, 0)[7]);
}

TEST(RoutingTrace, ReadsTheSharedNvmoeTraces) {
    struct Want {
        const char* file;
        int64_t layers, k, first_layer;
    };
    for (const Want& w : {Want{"nvmoe-dsv2lite-decode.jsonl.gz", 26, 6, 1},
                          Want{"nvmoe-gptoss-decode.jsonl.gz", 36, 4, 0},
                          Want{"nvmoe-olmoe-decode.jsonl.gz", 16, 8, 0}}) {
        const std::string path = shared_trace(w.file);
        if (!std::filesystem::exists(path))
            GTEST_SKIP() << path << " not present (../shared/traces)";
        const RoutingTrace t = read_routing_trace(path, 50);
        EXPECT_EQ(t.n_layers, w.layers) << w.file;
        EXPECT_EQ(t.top_k, w.k) << w.file;
        EXPECT_EQ(t.layer_ids.front(), w.first_layer) << w.file;
        EXPECT_FALSE(t.has_weights) << w.file;
    }
}

TEST(Sim, EndToEndOnATinyTraceIsConsistent) {
    TANDEM_SEEDED(seed);
    std::mt19937_64 rng(seed);
    // 16 layers x top-8 of 64, OLMoE's shape; a skewed routing so caching has something to find.
    std::string text;
    for (int tok = 0; tok < 60; ++tok) {
        text += "{\"seq\": \"s\", \"experts\": [";
        for (int l = 0; l < 16; ++l) {
            std::vector<int> ids;
            while (ids.size() < 8) {
                const int e = int(rng() % 16 + (rng() % 4 == 0 ? rng() % 48 : 0));
                if (std::find(ids.begin(), ids.end(), e) == ids.end()) ids.push_back(e);
            }
            text += l ? ", [" : "[";
            for (size_t i = 0; i < ids.size(); ++i)
                text += (i ? ", " : "") + std::to_string(ids[i]);
            text += "]";
        }
        text += "]}\n";
    }
    const RoutingTrace t = parse_routing_trace(text, "tiny");
    const ModelShape shape = model_preset("olmoe-1b-7b", 4.5);
    const HardwareProfile hw = parse_hardware_profile(R"({
        "cpu_bandwidth_gbs": 60, "cpu_gflops": 17.3, "cpu_expert_overhead_ms": 0,
        "cpu_first_expert_ms": 0.79, "gpu_bandwidth_gbs": 768, "gpu_tflops": 100,
        "gpu_expert_overhead_ms": 0.49, "pcie_bandwidth_gbs": 11.65, "pcie_latency_ms": 0,
        "gpu_expert_memory_gb": 40})",
                                                      "paper");
    auto run = [&](SimPolicy p, double ratio) {
        return simulate({.trace = t,
                         .shape = shape,
                         .hw = hw,
                         .budget_ratio = ratio,
                         .policy = p,
                         .prompt_len = 32,
                         .seed = seed});
    };
    const SimResult stat =
        run({.cache = CachePolicyKind::Static, .planner = PlannerKind::Static}, 0.1);
    const SimResult cpu =
        run({.cache = CachePolicyKind::Lru, .planner = PlannerKind::CpuOnly}, 0.25);
    const SimResult hyb = run({.cache = CachePolicyKind::Mrs,
                               .planner = PlannerKind::HybriMoe,
                               .prefetch = true,
                               .predictor = "oracle:1"},
                              0.1);
    EXPECT_EQ(stat.bytes_moved, 0) << "static moves nothing after start-up";
    EXPECT_EQ(stat.prefetch_issued, 0);
    EXPECT_GT(stat.hit_rate, 0.0);
    EXPECT_LT(hyb.tbt_ms, stat.tbt_ms);
    EXPECT_LT(stat.tbt_ms, cpu.tbt_ms);
    EXPECT_GT(hyb.prefetch_issued, 0);
    EXPECT_LE(hyb.prefetch_used + hyb.prefetch_wasted, hyb.prefetch_issued);
    EXPECT_GT(hyb.ttft_ms, 0.0);
    // Budget 1: everything resident, nothing moves, every access hits.
    const SimResult all =
        run({.cache = CachePolicyKind::Lru, .planner = PlannerKind::HybriMoe}, 1.0);
    EXPECT_DOUBLE_EQ(all.hit_rate, 1.0);
    EXPECT_EQ(all.bytes_moved, 0);
    // The kTransformers baseline by name: the frozen profile set, no copies; with attention on
    // the CPU (as Tandem runs it today) the same routing costs more per token.
    const SimPolicy kt{.cache = CachePolicyKind::Static, .planner = PlannerKind::Static};
    EXPECT_TRUE(kt.is_ktransformers_static());
    EXPECT_EQ(stat.policy, "ktransformers-static");
    EXPECT_FALSE((SimPolicy{.cache = CachePolicyKind::Static, .planner = PlannerKind::HybriMoe})
                     .is_ktransformers_static());
    const SimResult kt_cpu_attention = simulate({.trace = t,
                                                 .shape = shape,
                                                 .hw = hw,
                                                 .budget_ratio = 0.1,
                                                 .policy = kt,
                                                 .prompt_len = 32,
                                                 .seed = seed,
                                                 .attention_on_gpu = false});
    EXPECT_DOUBLE_EQ(kt_cpu_attention.hit_rate, stat.hit_rate);
    EXPECT_GT(kt_cpu_attention.tbt_ms, stat.tbt_ms);
    EXPECT_GT(kt_cpu_attention.ttft_ms, stat.ttft_ms);
}

}  // namespace
}  // namespace tandem::sim

// The routing recorder writes what the engine routed, in the trace format tandem-sim reads: a
// recording parses back to the same experts and weights, with the model's shape; and the
// committed trace of the demo model matches that model.
#include <gtest/gtest.h>

#include <tandem/engine.h>
#include <cmath>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "scheduler/routing_trace.h"
#include "tests/test_util.h"
#include "tools/routing_recorder.h"

namespace tandem {
namespace {

TEST(RoutingRecorder, ARecordingParsesBackToWhatTheEngineRouted) {
    Engine engine = Engine::open(
        {.model_dir = test::data_dir() + "/chat_tiny", .n_threads = 2, .pin_threads = false});
    const SamplingParams params{.temperature = 0,
                                .max_tokens = 7,
                                .ignore_eos = true,
                                .return_routed_experts = true,
                                .routing_lookahead = 2};
    const RequestOutput a = engine.generate(Prompt::from_text("Once upon a time"), params);
    const RequestOutput b = engine.generate(Prompt::from_text("Hello"), params);
    test::TempDir dir;
    const std::string path = dir.str() + "/trace.jsonl.gz";
    {
        RoutingRecorder recorder(path, /*prefill=*/false);
        recorder.write("story/0", "story", a, 0);
        recorder.write("chat/0", "chat", b, 0);
        EXPECT_EQ(recorder.lines(), 2 * (7 - 1));  // decode inputs: generated tokens fed back
    }
    const RoutingTrace trace = read_routing_trace(path);
    EXPECT_EQ(trace.n_layers, 3);
    EXPECT_EQ(trace.top_k, 2);
    EXPECT_TRUE(trace.has_weights);
    ASSERT_EQ(trace.n_tokens(), 12);
    int64_t token = 0;
    for (const RequestOutput* out : {&a, &b}) {
        const RoutedExperts& r = out->completions[0].routed_experts;
        for (int64_t pos = out->prompt_tokens; pos < r.positions(); ++pos, ++token)
            for (int64_t l = 0; l < 3; ++l)
                for (int64_t k = 0; k < 2; ++k) {
                    const size_t at = size_t((pos * 3 + l) * 2 + k);
                    EXPECT_EQ(trace.experts_at(token, l)[k], r.experts[at]);
                    EXPECT_NEAR(trace.weights_at(token, l)[k], r.weights[at], 1e-5);
                }
    }
    EXPECT_EQ(trace.seq.front(), 0);
    EXPECT_EQ(trace.seq.back(), 1);
}

// The demo model's committed trace (tools/record_demo_trace.sh) fits the committed model.
TEST(RoutingRecorder, TheDemoTraceMatchesTheDemoModel) {
    const std::filesystem::path model =
        std::filesystem::path(test::data_dir()).parent_path().parent_path() / "models" / "demo";
    const auto trace_path = model / "routing-trace.jsonl.gz";
    const auto config_path = model / "tandem-demo-moe" / "config.json";
    if (!std::filesystem::exists(trace_path) || !std::filesystem::exists(config_path))
        GTEST_SKIP() << "no demo model trace at " << trace_path;
    std::ifstream in(config_path);
    const nlohmann::json config = nlohmann::json::parse(in);
    const RoutingTrace trace = read_routing_trace(trace_path.string());
    EXPECT_EQ(trace.n_layers, config.at("num_hidden_layers").get<int64_t>());
    EXPECT_EQ(trace.top_k, config.at("num_experts_per_tok").get<int64_t>());
    EXPECT_LT(trace.max_expert, config.value("num_experts", config.value("num_local_experts", 0)));
    EXPECT_TRUE(trace.has_weights);
    EXPECT_GT(trace.n_tokens(), 1000);
    for (size_t i = 0; i < trace.weights.size(); ++i)
        ASSERT_TRUE(trace.weights[i] > 0.0f && trace.weights[i] <= 1.0f) << i;
}

}  // namespace
}  // namespace tandem

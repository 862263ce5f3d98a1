// The routing recorder writes what the engine routed, in the trace format tandem-sim reads: a
// recording parses back to the same experts and weights, with the model's shape; and the
// committed trace of the demo model matches that model.
#include <gtest/gtest.h>

#include <tandem/engine.h>
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "models/config.h"
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

// A replay of the model's own recorded routing (prompt rows and generated ones) runs the same
// experts with the same weights, so the greedy tokens and their logprobs are the model's: on
// gpt-oss, whose replayed experts must keep their biases and clamped activation (the CPU
// runner's path, not the model's own). The trace holds the routing weights rounded: logprobs
// measured 1.6e-4 apart; with plain SwiGLU experts, 3.5e-2 and other tokens.
TEST(RoutingRecorder, ReplayingTheModelsOwnRoutingGivesItsTokens) {
    const std::string model = test::data_dir() + "/golden/gpt_oss/f32";
    const SamplingParams params{.temperature = 0,
                                .max_tokens = 6,
                                .ignore_eos = true,
                                .logprobs = 0,
                                .return_routed_experts = true};
    const Prompt prompt = Prompt::tokens({1, 7, 42, 3, 19, 88, 5});
    RequestOutput own;
    {
        Engine engine = Engine::open({.model_dir = model, .n_threads = 2, .pin_threads = false});
        own = engine.generate(prompt, params);
    }
    test::TempDir dir;
    const std::string path = dir.str() + "/trace.jsonl.gz";
    {
        RoutingRecorder recorder(path, /*prefill=*/true);
        recorder.write("own/0", "own", own, 0);
    }
    Engine replaying = Engine::open(
        {.model_dir = model, .n_threads = 2, .pin_threads = false, .replay_routing = path});
    const RequestOutput replayed = replaying.generate(prompt, params);
    const Completion &a = own.completions[0], &b = replayed.completions[0];
    EXPECT_EQ(b.token_ids, a.token_ids);
    ASSERT_EQ(b.logprobs.size(), a.logprobs.size());
    for (size_t i = 0; i < a.logprobs.size(); ++i)
        EXPECT_NEAR(b.logprobs[i].logprob, a.logprobs[i].logprob, 2e-3) << "token " << i;
}

// With routing_probabilities the recording carries every expert's router probability: a
// distribution per token and layer (softmax: sums to 1) whose top-k are the chosen experts, and
// the trace reader takes it as the full distribution tandem-sim scores.
TEST(RoutingRecorder, TheFullDistributionIsRecordedAndReadBack) {
    Engine engine = Engine::open(
        {.model_dir = test::data_dir() + "/chat_tiny", .n_threads = 2, .pin_threads = false});
    const SamplingParams params{.temperature = 0,
                                .max_tokens = 5,
                                .ignore_eos = true,
                                .return_routed_experts = true,
                                .routing_probabilities = true};
    const RequestOutput out = engine.generate(Prompt::from_text("Once upon a time"), params);
    const RoutedExperts& r = out.completions[0].routed_experts;
    const int64_t n_experts = engine.model_config().n_experts;
    ASSERT_EQ(r.n_experts, n_experts);
    ASSERT_EQ(int64_t(r.probabilities.size()), r.positions() * r.n_layers * n_experts);
    test::TempDir dir;
    const std::string path = dir.str() + "/trace.jsonl";
    {
        RoutingRecorder recorder(path, /*prefill=*/true);
        recorder.write("story/0", "story", out, 0);
    }
    const RoutingTrace trace = read_routing_trace(path);
    ASSERT_TRUE(trace.has_probs());
    ASSERT_EQ(trace.n_probs, n_experts);
    ASSERT_EQ(trace.n_tokens(), r.positions());
    for (int64_t t = 0; t < trace.n_tokens(); ++t)
        for (int64_t l = 0; l < trace.n_layers; ++l) {
            const float* p = trace.probs_at(t, l);
            double sum = 0;
            float least_chosen = 1;
            for (int64_t e = 0; e < n_experts; ++e) {
                sum += p[e];
                EXPECT_NEAR(p[e], r.probabilities[size_t((t * r.n_layers + l) * n_experts + e)],
                            1e-4);
            }
            EXPECT_NEAR(sum, 1.0, 1e-3) << "token " << t << " layer " << l;
            for (int64_t k = 0; k < trace.top_k; ++k)
                least_chosen = std::min(least_chosen, p[trace.experts_at(t, l)[k]]);
            for (int64_t e = 0; e < n_experts; ++e)
                if (std::find(trace.experts_at(t, l), trace.experts_at(t, l) + trace.top_k,
                              int32_t(e)) == trace.experts_at(t, l) + trace.top_k)
                    EXPECT_LE(p[e], least_chosen + 1e-4) << "expert " << e << " beat a chosen one";
        }
    // Without the flag, nothing of it is kept.
    const RequestOutput plain = engine.generate(Prompt::from_text("Hello"),
                                                {.max_tokens = 2, .return_routed_experts = true});
    EXPECT_TRUE(plain.completions[0].routed_experts.probabilities.empty());
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
    // It carries the router's full distribution (--record-probabilities), whose top-k are the
    // chosen experts up to the four written decimals.
    ASSERT_EQ(trace.n_probs, config.value("num_experts", config.value("num_local_experts", 0)));
    for (int64_t t = 0; t < trace.n_tokens(); ++t)
        for (int64_t l = 0; l < trace.n_layers; ++l) {
            const float* p = trace.probs_at(t, l);
            const int32_t* chosen = trace.experts_at(t, l);
            double sum = 0;
            float least_chosen = 1;
            for (int64_t e = 0; e < trace.n_probs; ++e)
                sum += p[e];
            ASSERT_NEAR(sum, 1.0, 1e-3) << "token " << t << " layer " << l;
            for (int64_t k = 0; k < trace.top_k; ++k)
                least_chosen = std::min(least_chosen, p[chosen[k]]);
            for (int64_t e = 0; e < trace.n_probs; ++e)
                if (std::find(chosen, chosen + trace.top_k, int32_t(e)) == chosen + trace.top_k) {
                    ASSERT_LE(p[e], least_chosen + 1e-4)
                        << "token " << t << " layer " << l << ": expert " << e;
                }
        }
}

}  // namespace
}  // namespace tandem

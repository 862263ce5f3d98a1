// The embedded API under continuous batching: results independent of the batch, seeds, n,
// stops, logprobs against score(), routed experts, streaming and aborts, the KV budget and the
// queue, and reload_weights under load.
#include <gtest/gtest.h>

#include <tandem/engine.h>
#include <atomic>
#include <cmath>
#include <future>
#include <random>
#include <thread>

#include "engine/src/engine_internals.h"
#include "kernels/cpu/tile_gemm.h"
#include "models/config.h"
#include "models/model.h"
#include "tests/test_util.h"

namespace tandem {
namespace {

class ApiTest : public test::TwoTinyModelsTest {
  protected:
    static Engine open(const std::string& dir, EngineConfig config = {}) {
        config.model_dir = dir;
        config.n_threads = 2;
        config.pin_threads = false;
        return Engine::open(config);
    }
    static std::string chat_model() { return test::data_dir() + "/chat_tiny"; }
};

// Sequences of different lengths, submitted together and prefilled in chunks next to each
// other's decodes, produce exactly what each produces alone, with batch_invariant: greedy tokens
// and logprobs compared exactly. Returns the worst logprob difference.
double batch_against_alone(const std::string& dir, EngineConfig config, int n_sequences,
                           uint64_t seed) {
    std::mt19937_64 rng(seed);
    config.model_dir = dir;
    config.n_threads = 2;
    config.pin_threads = false;
    config.max_step_tokens = 48;
    Engine engine = Engine::open(config);
    const int32_t vocab = int32_t(engine.model_config().vocab_size);
    const SamplingParams params{
        .temperature = 0, .max_tokens = 12, .ignore_eos = true, .logprobs = 0};
    std::vector<std::vector<int32_t>> prompts;
    for (int i = 0; i < n_sequences; ++i)
        prompts.push_back(test::random_tokens(rng, 1 + int64_t(rng() % 40), std::min(vocab, 96)));
    std::vector<RequestHandle> handles;
    for (const auto& p : prompts)
        handles.push_back(engine.submit(Prompt::tokens(p), params));
    double worst = 0;
    for (size_t i = 0; i < prompts.size(); ++i) {
        const RequestOutput together = handles[i].wait();
        const RequestOutput alone = engine.generate(Prompt::tokens(prompts[i]), params);
        EXPECT_EQ(together.completions[0].token_ids, alone.completions[0].token_ids) << i;
        const size_t n =
            std::min(together.completions[0].logprobs.size(), alone.completions[0].logprobs.size());
        for (size_t t = 0; t < n; ++t)
            worst = std::max<double>(worst, std::abs(together.completions[0].logprobs[t].logprob -
                                                     alone.completions[0].logprobs[t].logprob));
    }
    EXPECT_EQ(engine.stats().kv_blocks_used, 0);
    EXPECT_EQ(engine.stats().active_sequences, 0);
    return worst;
}

struct BatchInvariantKernels {
    ~BatchInvariantKernels() { cpu::set_batch_invariant_kernels(false); }
};

// Each token's row goes through the same kernels whatever else is in the step.
TEST_F(ApiTest, GreedyResultsDoNotDependOnTheBatch) {
    TANDEM_SEEDED(seed);
    const BatchInvariantKernels restore;
    EXPECT_EQ(batch_against_alone(a_->str(), {.batch_invariant = true}, 32, seed), 0.0);
}

// The same with Q4_K weights, whose one-token products otherwise take several-row dots and
// whose prefill otherwise takes the tile path.
TEST_F(ApiTest, GreedyResultsDoNotDependOnTheBatchWithQuantizedWeights) {
    TANDEM_SEEDED(seed);
    const BatchInvariantKernels restore;
    test::TempDir dir;
    test::write_small_quantizable_model(dir.str(), seed);
    EXPECT_EQ(
        batch_against_alone(dir.str(), {.quantize = "q4_k", .batch_invariant = true}, 16, seed),
        0.0);
}

TEST_F(ApiTest, SeedsReproduceAndSamplesDiffer) {
    Engine engine = open(a_->str());
    const SamplingParams params{
        .n = 4, .temperature = 1.5f, .seed = 99, .max_tokens = 16, .ignore_eos = true};
    const RequestOutput x = engine.generate(Prompt::tokens({5, 6, 7}), params);
    const RequestOutput y = engine.generate(Prompt::tokens({5, 6, 7}), params);
    ASSERT_EQ(x.completions.size(), 4u);
    for (int i = 0; i < 4; ++i) {
        EXPECT_EQ(x.completions[size_t(i)].index, i);
        EXPECT_EQ(x.completions[size_t(i)].token_ids, y.completions[size_t(i)].token_ids);
        EXPECT_EQ(x.completions[size_t(i)].token_ids.size(), 16u);
    }
    EXPECT_NE(x.completions[0].token_ids, x.completions[1].token_ids);
    EXPECT_EQ(x.completion_tokens, 64);
    // Sample i of a request is what a single-sample request seeded with seed + i draws.
    SamplingParams single = params;
    single.n = 1;
    single.seed = 99 + 2;
    EXPECT_EQ(engine.generate(Prompt::tokens({5, 6, 7}), single).completions[0].token_ids,
              x.completions[2].token_ids);
}

TEST_F(ApiTest, StopStringsAndStopTokens) {
    Engine engine = open(chat_model());
    const Prompt prompt = Prompt::from_text("Once upon a time");
    const SamplingParams free{.temperature = 0, .max_tokens = 24, .ignore_eos = true};
    const Completion all = engine.generate(prompt, free).completions[0];
    ASSERT_GE(all.text.size(), 8u) << all.text;
    // Stop at a piece of the text the model writes anyway.
    SamplingParams stopping = free;
    const std::string stop = all.text.substr(all.text.size() / 2, 3);
    stopping.stop = {stop};
    const Completion cut = engine.generate(prompt, stopping).completions[0];
    EXPECT_EQ(cut.finish_reason, FinishReason::Stop);
    EXPECT_EQ(cut.stop_reason, stop);
    EXPECT_EQ(cut.text, all.text.substr(0, all.text.find(stop)));
    // A stop token ends the sample after it, as EOS does; min_tokens holds it back.
    SamplingParams by_token = free;
    by_token.stop_token_ids = {all.token_ids[3]};
    const Completion at_token = engine.generate(prompt, by_token).completions[0];
    const auto first = std::find(all.token_ids.begin(), all.token_ids.end(), all.token_ids[3]);
    EXPECT_EQ(at_token.token_ids, std::vector<int32_t>(all.token_ids.begin(), first + 1));
    EXPECT_EQ(at_token.finish_reason, FinishReason::Stop);
    by_token.min_tokens = 8;
    EXPECT_GE(engine.generate(prompt, by_token).completions[0].token_ids.size(), 8u);
}

TEST_F(ApiTest, LogprobsEqualScoreOfTheSameSequence) {
    TANDEM_SEEDED(seed);
    Engine engine = open(a_->str());
    const std::vector<int32_t> prompt = {9, 8, 7, 6, 5};
    const RequestOutput out = engine.generate(Prompt::tokens(prompt), {.temperature = 1.0f,
                                                                       .seed = seed,
                                                                       .max_tokens = 10,
                                                                       .ignore_eos = true,
                                                                       .logprobs = 5,
                                                                       .prompt_logprobs = 2});
    const Completion& c = out.completions[0];
    ASSERT_EQ(c.logprobs.size(), c.token_ids.size());
    std::vector<int32_t> all = prompt;
    all.insert(all.end(), c.token_ids.begin(), c.token_ids.end());
    const std::vector<float> scored = engine.score(all);
    ASSERT_EQ(scored.size(), all.size() - 1);
    ASSERT_EQ(out.prompt_logprobs.size(), prompt.size() - 1);
    for (size_t i = 0; i + 1 < prompt.size(); ++i) {
        EXPECT_EQ(out.prompt_logprobs[i].token, prompt[i + 1]);
        EXPECT_NEAR(out.prompt_logprobs[i].logprob, scored[i], 1e-5);
        EXPECT_EQ(out.prompt_logprobs[i].top.size(), 2u);
    }
    for (size_t t = 0; t < c.token_ids.size(); ++t) {
        const TokenLogprob& lp = c.logprobs[t];
        EXPECT_EQ(lp.token, c.token_ids[t]);
        EXPECT_NEAR(lp.logprob, scored[prompt.size() - 1 + t], 1e-4) << t;
        ASSERT_EQ(lp.top.size(), 5u);
        for (size_t k = 1; k < 5; ++k)
            EXPECT_GE(lp.top[k - 1].second, lp.top[k].second);
        EXPECT_GE(lp.top[0].second, lp.logprob);
        EXPECT_LE(lp.logprob, 0.0f);
    }
}

TEST_F(ApiTest, RoutedExpertsCoverEveryPositionRun) {
    Engine engine = open(a_->str());
    const std::vector<int32_t> prompt = {3, 1, 4, 1, 5, 9};
    const RequestOutput out =
        engine.generate(Prompt::tokens(prompt), {.temperature = 0,
                                                 .max_tokens = 5,
                                                 .ignore_eos = true,
                                                 .return_routed_experts = true,
                                                 .routing_lookahead = 2});
    const RoutedExperts& r = out.completions[0].routed_experts;
    const ModelConfig& c = engine.model_config();
    EXPECT_EQ(r.top_k, c.n_experts_active);
    EXPECT_EQ(r.n_layers, int32_t(r.layers.size()));
    EXPECT_GT(r.n_layers, 0);
    EXPECT_EQ(r.positions(), int64_t(prompt.size()) + 5 - 1);
    for (int32_t e : r.experts)
        EXPECT_TRUE(e >= 0 && e < c.n_experts) << e;
    ASSERT_EQ(r.weights.size(), r.experts.size());
    for (float w : r.weights)
        EXPECT_TRUE(w > 0.0f && w <= 1.0f) << w;
    ASSERT_EQ(r.lookahead, 2);
    ASSERT_EQ(r.predicted.size(), r.experts.size() * 2);
    // The prompt's routing is what a forward of the prompt alone chooses, and so are the gate
    // lookahead's predictions; past the last MoE layer there is nothing to predict.
    KvCache cache(engine_model(engine).kv_cache_shape(int64_t(prompt.size())));
    const SequenceStep step{.tokens = prompt, .cache = &cache};
    StepRouting routing{.lookahead = 2};
    engine_model(engine).forward({&step, 1}, engine_pool(engine), &routing);
    ASSERT_EQ(int32_t(routing.routing.size()), r.n_layers);
    for (size_t pos = 0; pos < prompt.size(); ++pos)
        for (int32_t l = 0; l < r.n_layers; ++l)
            for (int32_t k = 0; k < r.top_k; ++k)
                EXPECT_EQ(
                    r.experts[(pos * size_t(r.n_layers) + size_t(l)) * size_t(r.top_k) + size_t(k)],
                    routing.routing[size_t(l)].experts[pos * size_t(r.top_k) + size_t(k)]);
    const auto k = size_t(r.top_k), layers = size_t(r.n_layers);
    for (size_t pos = 0; pos < prompt.size(); ++pos)
        for (size_t l = 0; l < layers; ++l)
            for (size_t j = 0; j < 2; ++j)
                for (size_t i = 0; i < k; ++i) {
                    const int32_t got = r.predicted[((pos * layers + l) * 2 + j) * k + i];
                    const Routing& want = routing.predicted[l][j];
                    EXPECT_EQ(got, want.experts.empty() ? -1 : want.experts[pos * k + i]);
                    if (l + j + 1 >= layers) {
                        EXPECT_EQ(got, -1);
                    }
                }
}

TEST_F(ApiTest, StreamedDeltasAddUpToTheOutput) {
    Engine engine = open(chat_model());
    std::mutex mutex;
    std::vector<std::string> text(2);
    std::vector<std::vector<int32_t>> ids(2);
    std::vector<int> finals(2);
    RequestHandle h = engine.submit(
        Prompt::chat({{"user", "Hello there"}}),
        {.n = 2, .temperature = 0.8f, .seed = 5, .max_tokens = 20, .ignore_eos = true},
        [&](const StreamDelta& d) {
            std::lock_guard lock(mutex);
            text[size_t(d.index)] += d.text;
            ids[size_t(d.index)].insert(ids[size_t(d.index)].end(), d.token_ids.begin(),
                                        d.token_ids.end());
            finals[size_t(d.index)] += d.finish_reason.has_value();
        });
    const RequestOutput& out = h.wait();
    for (size_t i = 0; i < 2; ++i) {
        EXPECT_EQ(text[i], out.completions[i].text);
        EXPECT_EQ(ids[i], out.completions[i].token_ids);
        EXPECT_EQ(finals[i], 1);
    }
}

// EngineConfig.on_load_progress: load-time quantization reports its bytes as it goes, on the
// opening thread, up to the stage's total; a plain load reports nothing (nothing slow happens).
TEST_F(ApiTest, LoadProgressReportsQuantizationUpToItsTotal) {
    struct Seen {
        std::string stage;
        int64_t done, total;
        std::thread::id thread;
    };
    std::vector<Seen> seen;
    const auto record = [&](const LoadProgress& p) {
        seen.push_back({std::string(p.stage), p.done, p.total, std::this_thread::get_id()});
    };
    const std::string model = test::data_dir() + "/golden/qwen3_moe/f32";
    open(model, {.quantize = "q8_0", .on_load_progress = record});
    ASSERT_GE(seen.size(), 5u);  // one report per matrix
    int64_t last = 0;
    for (const Seen& s : seen) {
        EXPECT_EQ(s.stage, "quantize");
        EXPECT_EQ(s.total, seen.front().total);
        EXPECT_GT(s.done, last);
        EXPECT_EQ(s.thread, std::this_thread::get_id());
        last = s.done;
    }
    EXPECT_EQ(seen.back().done, seen.back().total);
    seen.clear();
    open(model, {.on_load_progress = record});
    EXPECT_TRUE(seen.empty());
}

TEST_F(ApiTest, AbortFreesTheRequestsBlocks) {
    Engine engine = open(a_->str());
    std::atomic<int> tokens{0};
    std::atomic<bool> aborted{false};
    RequestHandle h = engine.submit(Prompt::tokens({1, 2, 3}),
                                    {.temperature = 0, .max_tokens = 60, .ignore_eos = true},
                                    [&](const StreamDelta& d) {
                                        tokens += int(d.token_ids.size());
                                        // Hold the engine after the third token until the abort is
                                        // in: the tiny model would otherwise finish all 60 before
                                        // the test thread gets to it.
                                        while (tokens == 3 && !aborted)
                                            std::this_thread::yield();
                                    });
    while (tokens < 3)
        std::this_thread::yield();
    h.abort();
    aborted = true;
    const RequestOutput& out = h.wait();
    EXPECT_EQ(out.completions[0].finish_reason, FinishReason::Abort);
    EXPECT_EQ(out.completions[0].token_ids.size(), 3u);
    EXPECT_EQ(engine.stats().kv_blocks_used, 0);
}

// A request aborted while it waits ends with its callback run outside the scheduler's lock: the
// callback may ask the engine for its stats (it deadlocked when the callback ran under the lock).
TEST_F(ApiTest, AnAbortedWaitingRequestsCallbackMayCallTheEngine) {
    Engine engine = open(a_->str(), {.max_sequences = 1});
    const SamplingParams slow{.temperature = 0, .max_tokens = 40, .ignore_eos = true};
    // The running request holds the only sequence slot until the abort is in.
    std::atomic<bool> aborted{false};
    RequestHandle running = engine.submit(Prompt::tokens({1, 2}), slow, [&](const StreamDelta&) {
        while (!aborted)
            std::this_thread::yield();
    });
    std::atomic<int> finishes{0};
    std::atomic<int64_t> waiting_seen{-1};
    RequestHandle waiting = engine.submit(Prompt::tokens({3, 4}), slow, [&](const StreamDelta& d) {
        if (!d.finish_reason) return;
        EXPECT_EQ(*d.finish_reason, FinishReason::Abort);
        waiting_seen = engine.stats().waiting_requests;
        ++finishes;
    });
    waiting.abort();
    aborted = true;
    const RequestOutput& out = waiting.wait();
    EXPECT_EQ(out.completions[0].finish_reason, FinishReason::Abort);
    EXPECT_TRUE(out.completions[0].token_ids.empty()) << "it never started";
    EXPECT_EQ(finishes.load(), 1);
    EXPECT_EQ(waiting_seen.load(), 0) << "the callback ran after the request left the queue";
    running.abort();
    running.wait();
}

TEST_F(ApiTest, FullKvCacheQueuesRequestsAndRejectsTheImpossible) {
    // 6 blocks of 4 positions: requests of 3 + 8 tokens grow to 3 blocks each; more start than
    // fit at the end, and preempt each other. Batch-invariant, so that a preempted request's
    // recomputation gives the very logits of its decode steps.
    const BatchInvariantKernels restore;
    Engine probe = open(a_->str());
    KvCacheShape shape = engine_model(probe).kv_cache_shape(1);
    shape.dtype = *dtype_from_name(EngineConfig{}.kv_cache_type);  // the engine's default (f16)
    const auto block = int64_t(KvBlockPool::bytes_per_block(shape, 4));
    Engine engine =
        open(a_->str(), {.batch_invariant = true, .kv_cache_bytes = 6 * block, .kv_block_size = 4});
    const SamplingParams params{.temperature = 0, .max_tokens = 8, .ignore_eos = true};
    std::vector<RequestHandle> handles;
    for (int i = 0; i < 10; ++i)
        handles.push_back(engine.submit(Prompt::tokens({1, 2, int32_t(i)}), params));
    for (int i = 0; i < 10; ++i) {
        const RequestOutput& out = handles[size_t(i)].wait();
        EXPECT_EQ(
            out.completions[0].token_ids,
            engine.generate(Prompt::tokens({1, 2, int32_t(i)}), params).completions[0].token_ids);
    }
    try {
        engine.generate(Prompt::tokens({1, 2, 3}), {.max_tokens = 40});
        FAIL() << "a request larger than the KV cache was accepted";
    } catch (const RequestError& e) {
        EXPECT_NE(std::string(e.what()).find("KV cache has only 6"), std::string::npos) << e.what();
    }
    EXPECT_EQ(engine.stats().kv_blocks_total, 6);
}

TEST_F(ApiTest, AFullQueueRefusesNewRequests) {
    Engine engine = open(a_->str(), {.max_sequences = 1, .max_waiting_requests = 2});
    const SamplingParams slow{.temperature = 0, .max_tokens = 40, .ignore_eos = true};
    std::vector<RequestHandle> handles;
    bool refused = false;
    for (int i = 0; i < 8 && !refused; ++i) {
        try {
            handles.push_back(engine.submit(Prompt::tokens({1, 2}), slow));
        } catch (const QueueFullError&) {
            refused = true;
        }
    }
    EXPECT_TRUE(refused);
    for (RequestHandle& h : handles)
        h.abort();
    for (RequestHandle& h : handles)
        h.wait();
    EXPECT_EQ(engine.generate(Prompt::tokens({1, 2}), {.max_tokens = 2}).completions.size(), 1u);
}

TEST_F(ApiTest, PenaltiesReduceRepetition) {
    Engine engine = open(a_->str());
    auto distinct = [&](SamplingParams p) {
        p.temperature = 0;
        p.max_tokens = 40;
        p.ignore_eos = true;
        const auto ids = engine.generate(Prompt::tokens({4, 4, 4}), p).completions[0].token_ids;
        return std::set<int32_t>(ids.begin(), ids.end()).size();
    };
    const size_t plain = distinct({});
    EXPECT_GT(distinct({.frequency_penalty = 2.0f}), plain);
    EXPECT_GT(distinct({.presence_penalty = 2.0f}), plain);
    EXPECT_GT(distinct({.repetition_penalty = 5.0f}), plain);
}

// reload_weights between steps while other requests stream: they all finish, and what runs
// after the reload is exactly what an engine opened on the new checkpoint computes.
TEST_F(ApiTest, ReloadWeightsUnderLoad) {
    Engine engine = open(a_->str());
    Engine reference_b = open(b_->str());
    const SamplingParams params{.temperature = 0, .max_tokens = 30, .ignore_eos = true};
    std::vector<RequestHandle> running;
    for (int i = 0; i < 4; ++i)
        running.push_back(engine.submit(Prompt::tokens({int32_t(10 + i), 3}), params));
    engine.reload_weights(b_->str());
    for (RequestHandle& h : running)
        EXPECT_EQ(h.wait().completions[0].token_ids.size(), 30u);
    const std::vector<int32_t> prompt = {7, 7, 1};
    EXPECT_EQ(engine.generate(Prompt::tokens(prompt), params).completions[0].token_ids,
              reference_b.generate(Prompt::tokens(prompt), params).completions[0].token_ids);
    engine.reload_weights(a_->str());
    Engine reference_a = open(a_->str());
    EXPECT_EQ(engine.score(prompt), reference_a.score(prompt));
    // A checkpoint of another shape is refused and the engine keeps the one it has.
    test::TempDir other;
    test::write_small_quantizable_model(other.str());
    EXPECT_THROW(engine.reload_weights(other.str()), RequestError);
    EXPECT_EQ(engine.score(prompt), reference_a.score(prompt));
}

}  // namespace
}  // namespace tandem

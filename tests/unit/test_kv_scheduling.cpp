// KV memory on demand, through the Engine: blocks allocated as sequences grow (more requests at
// once than reserving max_tokens allows), preemption by recompute that changes nothing a client
// sees, the n samples of a request sharing their prompt's blocks, prefix cache hits that give the
// tokens of a cold run, a reload that empties the cache, and aborts that give every block back.
// Outputs are compared exactly in batch-invariant mode, where a token's logits do not depend on
// how its step was made up (a recomputation and a cache hit change the steps, not the math).
#include <gtest/gtest.h>

#include <tandem/engine.h>
#include <algorithm>
#include <atomic>
#include <map>
#include <random>
#include <thread>

#include "engine/src/engine_internals.h"
#include "kernels/cpu/tile_gemm.h"
#include "models/model.h"
#include "tests/test_util.h"

namespace tandem {
namespace {

constexpr int64_t kBlock = 4;  // positions per KV block in these tests

class KvSchedulingTest : public test::TwoTinyModelsTest {
  protected:
    void TearDown() override { cpu::set_batch_invariant_kernels(false); }  // process-wide
    // An engine on the tiny model with `blocks` KV blocks of kBlock positions (0: the default
    // budget), batch-invariant.
    static Engine open(int64_t blocks, EngineConfig config = {}) {
        config.model_dir = config.model_dir.empty() ? a_->str() : config.model_dir;
        config.n_threads = 2;
        config.pin_threads = false;
        config.batch_invariant = true;
        config.kv_block_size = kBlock;
        if (blocks > 0) {
            Engine probe = Engine::open({.model_dir = config.model_dir,
                                         .n_threads = 1,
                                         .pin_threads = false,
                                         .kv_block_size = kBlock});
            KvCacheShape shape = engine_model(probe).kv_cache_shape(1);
            shape.dtype = *dtype_from_name(config.kv_cache_type);  // f16 unless a test says
            config.kv_cache_bytes = blocks * int64_t(KvBlockPool::bytes_per_block(shape, kBlock));
        }
        return Engine::open(config);
    }
};

std::vector<int32_t> random_prompt(std::mt19937_64& rng, int64_t length) {
    return test::random_tokens(rng, length, 90);  // of the tiny model's 96
}

// What a run of requests gave and what the engine went through meanwhile.
struct Outcome {
    std::vector<RequestOutput> outputs;
    std::vector<std::map<int32_t, std::vector<int32_t>>> streamed;  // request: sample: tokens
    int64_t peak_sequences = 0;
    EngineStats stats;
};

Outcome run_all(Engine& engine, const std::vector<std::vector<int32_t>>& prompts,
                const std::vector<SamplingParams>& params) {
    Outcome run;
    run.streamed.resize(prompts.size());
    std::atomic<int64_t> peak{0};
    std::vector<RequestHandle> handles;
    for (size_t i = 0; i < prompts.size(); ++i)
        handles.push_back(
            engine.submit(Prompt::tokens(prompts[i]), params[i], [&, i](const StreamDelta& d) {
                // Called on the scheduler thread, one at a time.
                auto& tokens = run.streamed[i][d.index];
                tokens.insert(tokens.end(), d.token_ids.begin(), d.token_ids.end());
                peak = std::max(peak.load(), engine.stats().active_sequences);
            }));
    for (RequestHandle& h : handles)
        run.outputs.push_back(h.wait());
    run.peak_sequences = peak;
    run.stats = engine.stats();
    EXPECT_EQ(run.stats.kv_blocks_used, 0);  // every block back (or cached)
    EXPECT_EQ(run.stats.kv_blocks_used + run.stats.kv_blocks_cached + run.stats.kv_blocks_free,
              run.stats.kv_blocks_total);
    return run;
}

void expect_same_outputs(const Outcome& a, const Outcome& b) {
    ASSERT_EQ(a.outputs.size(), b.outputs.size());
    for (size_t i = 0; i < a.outputs.size(); ++i) {
        const RequestOutput &x = a.outputs[i], &y = b.outputs[i];
        ASSERT_EQ(x.completions.size(), y.completions.size()) << i;
        EXPECT_TRUE(x.error.empty() && y.error.empty()) << x.error << y.error;
        for (size_t s = 0; s < x.completions.size(); ++s) {
            const Completion &cx = x.completions[s], &cy = y.completions[s];
            EXPECT_EQ(cx.token_ids, cy.token_ids) << "request " << i << " sample " << s;
            ASSERT_EQ(cx.logprobs.size(), cy.logprobs.size());
            for (size_t t = 0; t < cx.logprobs.size(); ++t)
                EXPECT_EQ(cx.logprobs[t].logprob, cy.logprobs[t].logprob) << i << " " << t;
            EXPECT_EQ(cx.routed_experts.experts, cy.routed_experts.experts) << i;
        }
        ASSERT_EQ(x.prompt_logprobs.size(), y.prompt_logprobs.size());
        for (size_t t = 0; t < x.prompt_logprobs.size(); ++t)
            EXPECT_EQ(x.prompt_logprobs[t].logprob, y.prompt_logprobs[t].logprob);
    }
    // Streaming showed each token once, in order: exactly the final completions.
    for (const Outcome* r : {&a, &b})
        for (size_t i = 0; i < r->outputs.size(); ++i)
            for (const Completion& c : r->outputs[i].completions)
                EXPECT_EQ(r->streamed[i].at(c.index), c.token_ids) << i;
}

// 12 blocks of 4 positions; requests of 3 + 20 tokens need 6 blocks each by the end. Reserving
// them admits two at a time; allocating as they grow admits as many as their prompts' blocks and
// preempts the newest when the pool runs dry. Both give the same tokens.
TEST_F(KvSchedulingTest, LazyAllocationRunsMoreSequencesThanReservation) {
    TANDEM_SEEDED(seed);
    std::mt19937_64 rng(seed);
    std::vector<std::vector<int32_t>> prompts;
    for (int i = 0; i < 8; ++i)
        prompts.push_back(random_prompt(rng, 3));
    const std::vector<SamplingParams> params(
        8, {.temperature = 0, .max_tokens = 20, .ignore_eos = true, .logprobs = 0});
    Engine lazy = open(12);
    Engine reserving = open(12, {.kv_reserve_max_tokens = true});
    const Outcome a = run_all(lazy, prompts, params), b = run_all(reserving, prompts, params);
    EXPECT_LE(b.peak_sequences, 2);
    EXPECT_EQ(b.stats.preemptions, 0);
    EXPECT_GE(a.peak_sequences, 4);
    EXPECT_GT(a.stats.preemptions, 0);
    expect_same_outputs(a, b);
}

// Sampled requests, one with n = 3, one with prompt logprobs, one with routing, through a pool
// so small that they keep preempting each other: every token, logprob and routed expert is what
// an engine with room for all of them computes, and the streams repeat nothing.
TEST_F(KvSchedulingTest, PreemptionGivesTheOutputOfAnUnconstrainedRun) {
    TANDEM_SEEDED(seed);
    std::mt19937_64 rng(seed);
    std::vector<std::vector<int32_t>> prompts;
    std::vector<SamplingParams> params;
    for (int i = 0; i < 6; ++i) {
        prompts.push_back(random_prompt(rng, 2 + int64_t(rng() % 10)));
        params.push_back({.temperature = 0.9f,
                          .seed = rng(),
                          .max_tokens = 14 + int32_t(rng() % 8),
                          .ignore_eos = true,
                          .logprobs = 0});
    }
    params[1].n = 3;
    params[1].max_tokens = 8;  // 3 x (11 + 8) positions fit the 16 blocks
    params[2].prompt_logprobs = 1;
    params[3].return_routed_experts = true;
    Engine tight = open(16, {.max_step_tokens = 8});
    Engine roomy = open(0);
    const Outcome a = run_all(tight, prompts, params), b = run_all(roomy, prompts, params);
    EXPECT_GT(a.stats.preemptions, 0);
    EXPECT_EQ(b.stats.preemptions, 0);
    expect_same_outputs(a, b);
    const RoutedExperts& routed = a.outputs[3].completions[0].routed_experts;
    EXPECT_EQ(routed.positions(),
              int64_t(prompts[3].size() + a.outputs[3].completions[0].token_ids.size()) - 1);
}

// The samples of a request share the full blocks of their prompt and copy only its partly
// filled last one: 13 prompt positions are 3 full blocks and 1 position.
TEST_F(KvSchedulingTest, SamplesShareTheirPromptsBlocks) {
    TANDEM_SEEDED(seed);
    std::mt19937_64 rng(seed);
    Engine engine = open(0, {.prefix_caching = false});
    std::atomic<int64_t> used_at_start{-1};
    const RequestOutput out = engine
                                  .submit(Prompt::tokens(random_prompt(rng, 13)),
                                          {.n = 4, .temperature = 1.0f, .seed = 3, .max_tokens = 2},
                                          [&](const StreamDelta& d) {
                                              // The last sample's first token: every sample has its
                                              // cache by then.
                                              if (d.index == 3 && used_at_start < 0)
                                                  used_at_start = engine.stats().kv_blocks_used;
                                          })
                                  .wait();
    EXPECT_EQ(out.completions.size(), 4u);
    EXPECT_EQ(used_at_start, 3 + 4);  // copying would hold 4 x 4
    EXPECT_EQ(engine.stats().kv_blocks_used, 0);
}

// A second request with the same prompt (or its start) skips the cached blocks' prefill and
// computes the very tokens and logprobs of a cold run; no hit without prefix caching.
TEST_F(KvSchedulingTest, ARepeatedPromptHitsTheCacheAndGivesTheSameTokens) {
    TANDEM_SEEDED(seed);
    std::mt19937_64 rng(seed);
    const std::vector<int32_t> prompt = random_prompt(rng, 30);
    std::vector<int32_t> branch(prompt.begin(), prompt.begin() + 21);
    branch.push_back(int32_t(rng() % 90));
    const SamplingParams params{
        .n = 2, .temperature = 0.7f, .seed = 11, .max_tokens = 12, .logprobs = 0};
    Engine cold = open(0, {.prefix_caching = false});
    Engine warm = open(0);
    const Outcome reference = run_all(cold, {prompt, branch}, {params, params});
    const Outcome first = run_all(warm, {prompt}, {params});
    EXPECT_EQ(first.outputs[0].cached_prompt_tokens, 0);
    const Outcome again = run_all(warm, {prompt, branch}, {params, params});
    EXPECT_EQ(again.outputs[0].cached_prompt_tokens, 28);  // 7 full blocks, the 30th token computed
    EXPECT_EQ(again.outputs[0].timings.prefill_tokens, 2);
    EXPECT_EQ(again.outputs[1].cached_prompt_tokens, 20);  // the blocks before they differ
    expect_same_outputs(again, reference);
    EXPECT_EQ(reference.stats.prefix_cache_hits, 0);
    EXPECT_EQ(reference.stats.prefix_cache_queries, 0);
    EXPECT_EQ(again.stats.prefix_cache_queries, 30 + 30 + 22);
    EXPECT_EQ(again.stats.prefix_cache_hits, 28 + 20);
    EXPECT_GT(again.stats.kv_blocks_cached, 0);
}

// reload_weights empties the prefix cache: the same prompt is computed again, with the new
// weights, exactly as an engine opened on them does, and is cached anew.
TEST_F(KvSchedulingTest, ReloadingTheWeightsEmptiesTheCache) {
    TANDEM_SEEDED(seed);
    std::mt19937_64 rng(seed);
    const std::vector<int32_t> prompt = random_prompt(rng, 17);
    const SamplingParams params{.temperature = 0, .max_tokens = 6, .logprobs = 0};
    Engine engine = open(0);
    Engine reference = open(0, {.model_dir = b_->str()});
    run_all(engine, {prompt}, {params});
    engine.reload_weights(b_->str());
    EXPECT_EQ(engine.stats().kv_blocks_cached, 0);
    const Outcome after = run_all(engine, {prompt}, {params});
    EXPECT_EQ(after.outputs[0].cached_prompt_tokens, 0);
    expect_same_outputs(after, run_all(reference, {prompt}, {params}));
    EXPECT_EQ(run_all(engine, {prompt}, {params}).outputs[0].cached_prompt_tokens, 16);
}

// Aborting requests, running or preempted, gives back every block they held.
TEST_F(KvSchedulingTest, AbortsGiveBackEveryBlock) {
    TANDEM_SEEDED(seed);
    std::mt19937_64 rng(seed);
    Engine engine = open(12);
    std::atomic<int> tokens{0};
    std::atomic<bool> aborted{false};
    std::vector<RequestHandle> handles;
    for (int i = 0; i < 6; ++i)
        handles.push_back(
            engine.submit(Prompt::tokens(random_prompt(rng, 9)),
                          {.n = 2, .temperature = 1.0f, .max_tokens = 10, .ignore_eos = true},
                          [&](const StreamDelta& d) {
                              tokens += int(d.token_ids.size());
                              // Holds the engine mid-run, some requests preempted, until the aborts
                              // are in.
                              while (tokens >= 20 && !aborted)
                                  std::this_thread::yield();
                          }));
    while (tokens < 20)
        std::this_thread::yield();
    for (RequestHandle& h : handles)
        h.abort();
    aborted = true;
    for (RequestHandle& h : handles)
        h.wait();
    const EngineStats s = engine.stats();
    EXPECT_EQ(s.kv_blocks_used, 0);
    EXPECT_EQ(s.active_sequences, 0);
    EXPECT_EQ(s.waiting_requests, 0);
    EXPECT_EQ(s.kv_blocks_cached + s.kv_blocks_free, s.kv_blocks_total);
}

}  // namespace
}  // namespace tandem

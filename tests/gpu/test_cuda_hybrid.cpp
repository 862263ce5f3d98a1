// The hybrid executor on cuda:0 (EngineConfig.expert_device): the model on the CPU, the routed
// experts split between the CPU pool and the GPU's expert cache as each planner decides, at
// budgets 0/25/50/100 % with and without prefetch. Logits of a prefill and of token-by-token
// decode must be the CPU engine's (f32 throughout: 1e-3 abs), and the counters must say where
// the experts ran. The same with the model itself on cuda:0 (HybriMoE's split). Then concurrent
// requests, a reload mid-service, an abort while copies are in flight, and decode steps captured
// in CUDA graphs against the same steps run eagerly. Skips without a GPU.
#include <gtest/gtest.h>

#include <tandem/engine.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <fstream>
#include <random>
#include <thread>

#include "cache/kv_cache.h"
#include "engine/src/engine_internals.h"
#include "kernels/log.h"
#include "models/model.h"
#include "tests/gpu/gpu_test_util.h"
#include "tests/test_util.h"
#include "tools/synthetic_model.h"

namespace tandem {
namespace {

// ||got - want|| / ||want|| over all logits (NaN compares false, so fails any bound).
double relative_l2(const std::vector<float>& got, const std::vector<float>& want) {
    double diff = 0, norm = 0;
    for (size_t i = 0; i < got.size(); ++i) {
        diff += std::pow(double(got[i]) - want[i], 2);
        norm += double(want[i]) * want[i];
    }
    return std::sqrt(diff / norm);
}

class CudaHybrid : public ::testing::Test {
  protected:
    void SetUp() override {
        TANDEM_REQUIRE_GPU();
        test::write_hybrid_model(dir_.str(), seed_);
        profile_ = test::write_hybrid_profile(dir_.str());
        std::mt19937_64 rng(seed_);
        for (int i = 0; i < 12; ++i)
            prompt_.push_back(int32_t(rng() % 128));
        for (int i = 0; i < 6; ++i)
            decode_.push_back(int32_t(rng() % 128));
    }

    EngineConfig config(const std::string& planner, double ratio, bool prefetch) const {
        return {.model_dir = dir_.str(),
                .n_threads = 2,
                .pin_threads = false,
                .expert_device = "cuda:0",
                .gpu_expert_ratio = ratio,
                .planner = planner,
                .prefetch = prefetch,
                .hardware_profile = profile_};
    }

    const uint64_t seed_ = test::fresh_seed();
    test::TempDir dir_;
    std::string profile_;
    std::vector<int32_t> prompt_, decode_;
};

TEST_F(CudaHybrid, EveryPlannerAndBudgetGivesTheCpuLogits) {
    SCOPED_TRACE(::testing::Message() << "seed " << seed_);
    Engine cpu = Engine::open({.model_dir = dir_.str(), .n_threads = 2, .pin_threads = false});
    const std::vector<float> reference = test::prefill_then_decode(cpu, prompt_, decode_);
    for (const char* planner : {"hybrimoe", "static", "fiddler", "gpu-stream", "cpu-only"})
        for (double ratio : {0.0, 0.25, 0.5, 1.0})
            for (bool prefetch : {true, false}) {
                SCOPED_TRACE(::testing::Message()
                             << planner << " at " << ratio << (prefetch ? " with" : " without")
                             << " prefetch");
                Engine hybrid = Engine::open(config(planner, ratio, prefetch));
                const std::vector<float> got = test::prefill_then_decode(hybrid, prompt_, decode_);
                ASSERT_EQ(got.size(), reference.size());
                double worst = 0;
                for (size_t i = 0; i < got.size(); ++i)
                    worst = std::max(worst, std::fabs(double(got[i]) - reference[i]));
                EXPECT_LE(worst, 1e-3);  // NaN fails too
                const EngineStats s = hybrid.stats();
                const std::string p = planner;
                if (ratio == 0.0 || p == "cpu-only") EXPECT_EQ(s.experts_on_device, 0);
                if (ratio == 1.0) EXPECT_EQ(s.expert_cache_misses, 0);
                if (p == "static" && ratio == 1.0) EXPECT_EQ(s.experts_on_cpu, 0);
                if (p == "gpu-stream" && ratio > 0) EXPECT_GT(s.experts_on_device, 0);
                if (p == "gpu-stream" && ratio > 0 && ratio < 1) EXPECT_GT(s.expert_bytes_moved, 0);
            }
}

// HybriMoE's configuration: the model (attention, norms, router, shared parts) on cuda:0 with its
// routed experts left in host memory, split per layer by the executor between the CPU pool and
// the GPU's expert cache. Against the CPU engine (f32: relative L2 of all logits <= 1e-3, as the
// device decoder's own tests), with the counters saying where the experts ran.
TEST_F(CudaHybrid, TheModelOnTheGpuWithHybridExpertsGivesTheCpuLogits) {
    SCOPED_TRACE(::testing::Message() << "seed " << seed_);
    Engine cpu = Engine::open({.model_dir = dir_.str(), .n_threads = 2, .pin_threads = false});
    const std::vector<float> reference = test::prefill_then_decode(cpu, prompt_, decode_);
    for (const char* planner : {"hybrimoe", "static", "gpu-stream"})
        for (double ratio : {0.0, 0.5, 1.0}) {
            SCOPED_TRACE(::testing::Message() << planner << " at " << ratio);
            EngineConfig c = config(planner, ratio, true);
            c.device = "cuda:0";
            Engine hybrid = Engine::open(c);
            const std::vector<float> got = test::prefill_then_decode(hybrid, prompt_, decode_);
            ASSERT_EQ(got.size(), reference.size());
            EXPECT_LE(relative_l2(got, reference), 1e-3);  // NaN fails too
            const EngineStats s = hybrid.stats();
            EXPECT_GT(s.expert_cache_hits + s.expert_cache_misses, 0) << "the executor ran";
            if (ratio == 0.0) EXPECT_EQ(s.experts_on_device, 0);
            if (std::string(planner) == "static" && ratio == 1.0) EXPECT_EQ(s.experts_on_cpu, 0);
        }
}

// Requests from several threads at once (the CPU pool, the compute and copy streams busy
// together), then a reload of the same weights while the engine serves: the greedy tokens are
// the CPU engine's.
TEST_F(CudaHybrid, ConcurrentRequestsAndAReloadMatchTheCpu) {
    Engine cpu = Engine::open({.model_dir = dir_.str(), .n_threads = 2, .pin_threads = false});
    Engine hybrid = Engine::open(config("hybrimoe", 0.25, true));
    const SamplingParams greedy{.temperature = 0, .max_tokens = 10, .ignore_eos = true};
    std::vector<std::vector<int32_t>> prompts;
    std::mt19937_64 rng(seed_ + 1);
    for (int i = 0; i < 6; ++i) {
        std::vector<int32_t>& p = prompts.emplace_back(size_t(3 + i * 5));
        for (int32_t& t : p)
            t = int32_t(rng() % 128);
    }
    for (int round = 0; round < 2; ++round) {
        std::vector<RequestHandle> handles;
        for (const auto& p : prompts)
            handles.push_back(hybrid.submit(Prompt::tokens(p), greedy));
        for (size_t i = 0; i < prompts.size(); ++i) {
            SCOPED_TRACE(::testing::Message() << "round " << round << ", prompt " << i);
            const std::vector<int32_t> got = handles[i].wait().completions[0].token_ids;
            const std::vector<int32_t> want =
                cpu.generate(Prompt::tokens(prompts[i]), greedy).completions[0].token_ids;
            // Equal, or parted at a near-tie of the two candidates (the GPU sums in another
            // order, ~1e-6): the CPU's logprobs of both after the same prefix.
            const auto parted = std::mismatch(got.begin(), got.end(), want.begin());
            if (parted.first == got.end()) continue;
            std::vector<int32_t> a = prompts[i], b = prompts[i];
            a.insert(a.end(), got.begin(), parted.first + 1);
            b.insert(b.end(), want.begin(), parted.second + 1);
            EXPECT_LE(std::fabs(cpu.score(a).back() - cpu.score(b).back()), 1e-3f)
                << "parted at token " << parted.first - got.begin();
        }
        if (round == 0) hybrid.reload_weights(dir_.str());
    }
    EXPECT_GT(hybrid.stats().experts_on_device, 0);
}

// Greedy tokens of two engines: equal, or parted at a near-tie of the two candidates (another
// summation order, ~1e-6), which the reference engine's logprobs of both show.
void expect_same_greedy(Engine& reference, const std::vector<int32_t>& prompt,
                        const std::vector<int32_t>& got, const std::vector<int32_t>& want) {
    const auto parted = std::mismatch(got.begin(), got.end(), want.begin(), want.end());
    if (parted.first == got.end() && parted.second == want.end()) return;
    ASSERT_TRUE(parted.first != got.end() && parted.second != want.end())
        << "one is a prefix of the other: " << got.size() << " vs " << want.size() << " tokens";
    std::vector<int32_t> a = prompt, b = prompt;
    a.insert(a.end(), got.begin(), parted.first + 1);
    b.insert(b.end(), want.begin(), parted.second + 1);
    EXPECT_LE(std::fabs(reference.score(a).back() - reference.score(b).back()), 1e-3f)
        << "parted at token " << parted.first - got.begin();
}

// Decode steps captured in CUDA graphs with the routed experts on the hybrid executor (the plan,
// the CPU's experts and the copy lists from host functions; the device's experts through a
// writable table): logits as the CPU engine's, the same as without graphs, and the greedy tokens
// of batches of several sequences the same. The debug log says the steps were captured.
TEST_F(CudaHybrid, CudaGraphsGiveTheEagerStepsLogitsAndTokens) {
    SCOPED_TRACE(::testing::Message() << "seed " << seed_);
    Engine cpu = Engine::open({.model_dir = dir_.str(), .n_threads = 2, .pin_threads = false});
    const std::vector<float> reference = test::prefill_then_decode(cpu, prompt_, decode_);
    const SamplingParams greedy{.temperature = 0, .max_tokens = 12, .ignore_eos = true};
    std::vector<std::vector<int32_t>> prompts;
    std::mt19937_64 rng(seed_ + 2);
    for (int i = 0; i < 3; ++i) {
        std::vector<int32_t>& p = prompts.emplace_back(size_t(2 + 4 * i));
        for (int32_t& t : p)
            t = int32_t(rng() % 128);
    }
    for (const char* planner : {"hybrimoe", "static"})
        for (double ratio : {0.0, 0.25, 1.0})
            for (bool prefetch : {true, false}) {
                SCOPED_TRACE(::testing::Message()
                             << planner << " at " << ratio << ", prefetch " << prefetch);
                std::vector<std::vector<int32_t>> tokens[2];
                for (bool graphs : {false, true}) {
                    EngineConfig c = config(planner, ratio, prefetch);
                    c.device = "cuda:0";
                    c.cuda_graphs = graphs;
                    const LogLevel level = log_level();
                    set_log_level(LogLevel::Debug);
                    ::testing::internal::CaptureStderr();
                    {
                        Engine hybrid = Engine::open(c);
                        const std::vector<float> got =
                            test::prefill_then_decode(hybrid, prompt_, decode_);
                        ASSERT_EQ(got.size(), reference.size());
                        EXPECT_LE(relative_l2(got, reference), 1e-3) << "graphs " << graphs;
                        std::vector<RequestHandle> handles;
                        for (const auto& p : prompts)
                            handles.push_back(hybrid.submit(Prompt::tokens(p), greedy));
                        for (RequestHandle& h : handles)
                            tokens[graphs].push_back(h.wait().completions[0].token_ids);
                        if (ratio == 0.0) {
                            EXPECT_EQ(hybrid.stats().experts_on_device, 0);
                        }
                    }
                    const std::string log = ::testing::internal::GetCapturedStderr();
                    set_log_level(level);
                    EXPECT_EQ(log.find("CUDA graph failed"), std::string::npos) << log;
                    if (graphs) {
                        EXPECT_NE(
                            log.find("captured in a CUDA graph (routed experts on the hybrid"),
                            std::string::npos);
                    }
                }
                for (size_t i = 0; i < prompts.size(); ++i)
                    expect_same_greedy(cpu, prompts[i], tokens[1][i], tokens[0][i]);
            }
}

// An abort between two decode steps, while the executor's prefetches and demand copies may still
// be in flight: the request ends with its tokens so far, its KV blocks are freed, and the engine
// keeps serving the CPU's greedy tokens, with and without graphs.
TEST_F(CudaHybrid, AnAbortWhileCopiesAreInFlightLeavesTheEngineServing) {
    Engine cpu = Engine::open({.model_dir = dir_.str(), .n_threads = 2, .pin_threads = false});
    for (bool graphs : {false, true}) {
        SCOPED_TRACE(::testing::Message() << "graphs " << graphs);
        EngineConfig c = config("hybrimoe", 0.25, true);
        c.device = "cuda:0";
        c.cuda_graphs = graphs;
        Engine hybrid = Engine::open(c);
        const RequestOutput out = test::generate_then_abort(hybrid, prompt_, 4);
        EXPECT_EQ(out.completions[0].finish_reason, FinishReason::Abort);
        EXPECT_EQ(out.completions[0].token_ids.size(), 4u);
        EXPECT_EQ(hybrid.stats().kv_blocks_used, 0);
        const SamplingParams greedy{.temperature = 0, .max_tokens = 10, .ignore_eos = true};
        const std::vector<int32_t> got =
            hybrid.generate(Prompt::tokens(decode_), greedy).completions[0].token_ids;
        const std::vector<int32_t> want =
            cpu.generate(Prompt::tokens(decode_), greedy).completions[0].token_ids;
        expect_same_greedy(cpu, decode_, got, want);
        EXPECT_GT(hybrid.stats().experts_on_device, 0);
    }
}

// gpt-oss (tests/data/golden/gpt_oss: f32 weights and the MXFP4-quantized experts) with its
// routed experts on cuda:0 through the hybrid executor: the experts' biases travel with each
// launch and the clamped activation runs in the CUDA kernels; decode steps stay eager (the
// captured graphs' routed kernels have neither, HybridDecodeGraph::supported). Against the CPU
// engine's logits of the same prompt and decodes: relative L2 <= 2e-3 (f32: an expert with more
// than 8 tokens of the prompt takes cuBLAS's bf16 path) and 1e-2 (MXFP4: both sides round x to
// 8-bit blocks, at different points).
TEST(CudaHybridGptOss, ExpertsOnTheGpuGiveTheCpuLogits) {
    TANDEM_REQUIRE_GPU();
    test::TempDir dir;
    const std::string profile = test::write_hybrid_profile(dir.str());
    const std::vector<int32_t> prompt = {1, 7, 42, 3, 19, 88, 5, 61, 23, 9, 77, 14};
    const std::vector<int32_t> decode = {31, 2, 50, 8};
    for (const char* tag : {"f32", "mxfp4"}) {
        const std::string model = test::data_dir() + "/golden/gpt_oss/" + tag;
        Engine cpu = Engine::open({.model_dir = model, .n_threads = 2, .pin_threads = false});
        const std::vector<float> want = test::prefill_then_decode(cpu, prompt, decode);
        for (double ratio : {0.5, 1.0}) {
            SCOPED_TRACE(::testing::Message() << tag << " at " << ratio);
            Engine hybrid = Engine::open({.model_dir = model,
                                          .n_threads = 2,
                                          .pin_threads = false,
                                          .expert_device = "cuda:0",
                                          .gpu_expert_ratio = ratio,
                                          .hardware_profile = profile});
            const std::vector<float> got = test::prefill_then_decode(hybrid, prompt, decode);
            ASSERT_EQ(got.size(), want.size());
            EXPECT_LE(relative_l2(got, want), std::string(tag) == "f32" ? 2e-3 : 1e-2);
            EXPECT_GT(hybrid.stats().experts_on_device, 0);
        }
    }
}

}  // namespace
}  // namespace tandem

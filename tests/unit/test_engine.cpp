// The Engine API on a tiny synthetic model: generation limits, stop tokens, seeds, and requests
// that must fail cleanly and leave the engine usable.
#include <gtest/gtest.h>

#include <tandem/engine.h>
#include <cmath>
#include <map>

#include "kernels/error.h"
#include "kernels/thread_pool.h"
#include "models/config.h"
#include "models/model.h"
#include "tests/test_util.h"

namespace tandem {
namespace {

class EngineTest : public ::testing::Test {
  protected:
    static void SetUpTestSuite() {
        dir_ = new test::TempDir();
        test::write_tiny_model(dir_->str());
    }
    static void TearDownTestSuite() { delete dir_; }
    Engine open(int64_t context = 0) {
        return Engine::open({.model_dir = dir_->str(),
                             .n_threads = 2,
                             .pin_threads = false,
                             .context_length = context});
    }
    static test::TempDir* dir_;
};

test::TempDir* EngineTest::dir_ = nullptr;

TEST_F(EngineTest, GeneratesMaxTokensAndReportsTimings) {
    Engine engine = open();
    const std::vector<int32_t> prompt = {3, 4, 5, 6};
    const Generation out =
        engine.generate(prompt, {.temperature = 0, .max_tokens = 10, .ignore_eos = true});
    EXPECT_EQ(out.tokens.size(), 10u);
    EXPECT_EQ(out.finish_reason, FinishReason::Length);
    EXPECT_EQ(out.timings.prefill_tokens, 4);
    EXPECT_EQ(out.timings.decode_tokens, 9);
    EXPECT_GT(out.timings.decode_tokens_per_second(), 0.0);
    for (int32_t t : out.tokens)
        EXPECT_LT(t, engine.model_config().vocab_size);
}

TEST_F(EngineTest, SeededSamplingIsReproducible) {
    Engine engine = open();
    const std::vector<int32_t> prompt = {7, 8, 9};
    const SamplingParams params{
        .temperature = 1.0f, .top_k = 20, .seed = 1234, .max_tokens = 12, .ignore_eos = true};
    EXPECT_EQ(engine.generate(prompt, params).tokens, engine.generate(prompt, params).tokens);
}

TEST_F(EngineTest, StopsAtEos) {
    Engine engine = open();
    const std::vector<int32_t> prompt = {10, 11};
    // Find what greedy produces, then make sure generation stops when that token is EOS: the
    // tiny model's EOS is 2, so force it with a model whose first greedy token we learn.
    const Generation free =
        engine.generate(prompt, {.temperature = 0, .max_tokens = 20, .ignore_eos = true});
    const auto eos = engine.model_config().eos_token_ids;
    ASSERT_EQ(eos, std::vector<int32_t>{2});
    const Generation out = engine.generate(prompt, {.temperature = 0, .max_tokens = 20});
    const auto first_eos = std::find(free.tokens.begin(), free.tokens.end(), 2);
    if (first_eos == free.tokens.end()) {
        EXPECT_EQ(out.tokens, free.tokens);
    } else {
        EXPECT_EQ(out.tokens, std::vector<int32_t>(free.tokens.begin(), first_eos + 1));
        EXPECT_EQ(out.finish_reason, FinishReason::Stop);
    }
}

TEST_F(EngineTest, ContextLimits) {
    Engine engine = open(16);
    std::vector<int32_t> long_prompt(16, 5);
    try {
        engine.generate(long_prompt, {.max_tokens = 4});
        FAIL() << "expected an error";
    } catch (const Error& e) {
        EXPECT_NE(
            std::string(e.what()).find("prompt of 16 tokens does not fit the context length of 16"),
            std::string::npos)
            << e.what();
    }
    // A generation that reaches the context stops there with finish reason length.
    const Generation out = engine.generate(
        std::vector<int32_t>(10, 5), {.temperature = 0, .max_tokens = 50, .ignore_eos = true});
    EXPECT_EQ(out.tokens.size(), 7u);  // positions 10..15 fed back, the 7th sampled at the end
    EXPECT_EQ(out.finish_reason, FinishReason::Length);
}

TEST_F(EngineTest, BadRequestsFailAndTheEngineStaysUsable) {
    Engine engine = open();
    EXPECT_THROW(engine.generate(std::vector<int32_t>{}, {}), Error);
    EXPECT_THROW(engine.generate(std::vector<int32_t>{1, 96}, {}), Error);  // vocab is 96
    EXPECT_THROW(engine.generate(std::vector<int32_t>{-1}, {}), Error);
    EXPECT_THROW(engine.generate(std::vector<int32_t>{1}, {.top_p = 2.0f}), Error);
    EXPECT_EQ(engine
                  .generate(std::vector<int32_t>{1, 2, 3},
                            {.temperature = 0, .max_tokens = 3, .ignore_eos = true})
                  .tokens.size(),
              3u);
}

// Every quantized type end to end (attention, experts and lm_head quantized at load): logits
// stay within each type's stated distance of the float model's, on a model whose rows are whole
// K-quant blocks.
TEST(QuantizedEngine, LogitsStayCloseToTheFloatModel) {
    test::TempDir dir;
    test::write_small_quantizable_model(dir.str());
    const std::vector<int32_t> prompt = {5, 17, 3, 99, 42, 7, 64, 1};
    auto logits_of = [&](const std::string& quantize) {
        Engine engine = Engine::open(
            {.model_dir = dir.str(), .n_threads = 2, .pin_threads = false, .quantize = quantize});
        KvCache cache(engine.model().kv_cache_shape(int64_t(prompt.size())));
        const SequenceStep step{.tokens = prompt, .cache = &cache, .all_logits = true};
        OwnedTensor out = engine.model().forward({&step, 1}, engine.thread_pool());
        return std::vector<float>(out.view.data_as<float>(),
                                  out.view.data_as<float>() + out.view.numel());
    };
    const std::vector<float> reference = logits_of("");
    const std::map<std::string, double> bound = {
        {"q8_0", 0.03}, {"q6_k", 0.05}, {"q5_k", 0.08}, {"q4_k", 0.15}, {"q4_0", 0.2}};
    for (const auto& [type, limit] : bound) {
        const std::vector<float> got = logits_of(type);
        double diff = 0, norm = 0;
        for (size_t i = 0; i < got.size(); ++i) {
            ASSERT_TRUE(std::isfinite(got[i])) << type;
            diff += std::pow(double(got[i]) - reference[i], 2);
            norm += double(reference[i]) * reference[i];
        }
        EXPECT_LT(std::sqrt(diff / norm), limit) << type;
        RecordProperty(type + "_rel_l2", std::to_string(std::sqrt(diff / norm)));
    }
    EXPECT_THROW(Engine::open({.model_dir = dir.str(), .quantize = "q3_k"}), Error);
    EXPECT_THROW(Engine::open({.model_dir = dir.str(), .quantize = "bf16"}), Error);
}

TEST_F(EngineTest, OpenRejectsBadConfig) {
    EXPECT_THROW(Engine::open({.model_dir = ""}), Error);
    EXPECT_THROW(Engine::open({.model_dir = dir_->str(), .n_threads = -1}), Error);
}

}  // namespace
}  // namespace tandem

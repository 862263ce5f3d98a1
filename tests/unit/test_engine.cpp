// The Engine API on a tiny synthetic model: generation limits, stop tokens, seeds, and requests
// that must fail cleanly and leave the engine usable.
#include <gtest/gtest.h>

#include <tandem/engine.h>
#include <cmath>
#include <map>

#include "engine/src/engine_internals.h"
#include "kernels/device.h"
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

RequestOutput generate(Engine& engine, std::vector<int32_t> prompt, const SamplingParams& params) {
    return engine.generate(Prompt::tokens(std::move(prompt)), params);
}
const std::vector<int32_t>& tokens_of(const RequestOutput& out) {
    return out.completions.at(0).token_ids;
}

test::TempDir* EngineTest::dir_ = nullptr;

TEST_F(EngineTest, GeneratesMaxTokensAndReportsTimings) {
    Engine engine = open();
    const RequestOutput out =
        generate(engine, {3, 4, 5, 6}, {.temperature = 0, .max_tokens = 10, .ignore_eos = true});
    EXPECT_EQ(tokens_of(out).size(), 10u);
    EXPECT_EQ(out.completions[0].finish_reason, FinishReason::Length);
    EXPECT_EQ(out.prompt_tokens, 4);
    EXPECT_EQ(out.completion_tokens, 10);
    EXPECT_EQ(out.timings.decode_steps, 9);
    EXPECT_GT(out.timings.total_seconds, 0.0);
    EXPECT_GE(out.timings.first_token_seconds, out.timings.queue_seconds);
    for (int32_t t : tokens_of(out))
        EXPECT_LT(t, engine.model_config().vocab_size);
}

TEST_F(EngineTest, SeededSamplingIsReproducible) {
    Engine engine = open();
    const SamplingParams params{
        .temperature = 1.0f, .top_k = 20, .seed = 1234, .max_tokens = 12, .ignore_eos = true};
    EXPECT_EQ(tokens_of(generate(engine, {7, 8, 9}, params)),
              tokens_of(generate(engine, {7, 8, 9}, params)));
}

TEST_F(EngineTest, StopsAtEos) {
    Engine engine = open();
    // What greedy produces ignoring EOS; generation must stop at the first EOS (2) in it.
    const RequestOutput free =
        generate(engine, {10, 11}, {.temperature = 0, .max_tokens = 20, .ignore_eos = true});
    const auto eos = engine.model_config().eos_token_ids;
    ASSERT_EQ(eos, std::vector<int32_t>{2});
    const RequestOutput out = generate(engine, {10, 11}, {.temperature = 0, .max_tokens = 20});
    const std::vector<int32_t>& all = tokens_of(free);
    const auto first_eos = std::find(all.begin(), all.end(), 2);
    if (first_eos == all.end()) {
        EXPECT_EQ(tokens_of(out), all);
    } else {
        EXPECT_EQ(tokens_of(out), std::vector<int32_t>(all.begin(), first_eos + 1));
        EXPECT_EQ(out.completions[0].finish_reason, FinishReason::Stop);
    }
}

TEST_F(EngineTest, ContextLimits) {
    Engine engine = open(16);
    try {
        generate(engine, std::vector<int32_t>(16, 5), {.max_tokens = 4});
        FAIL() << "expected an error";
    } catch (const RequestError& e) {
        EXPECT_NE(
            std::string(e.what()).find("prompt of 16 tokens does not fit the context length of 16"),
            std::string::npos)
            << e.what();
    }
    // A generation that reaches the context stops there with finish reason length.
    const RequestOutput out = generate(engine, std::vector<int32_t>(10, 5),
                                       {.temperature = 0, .max_tokens = 50, .ignore_eos = true});
    EXPECT_EQ(tokens_of(out).size(), 6u);  // the sequence ends at 16 tokens
    EXPECT_EQ(out.completions[0].finish_reason, FinishReason::Length);
}

TEST_F(EngineTest, BadRequestsFailAndTheEngineStaysUsable) {
    Engine engine = open();
    EXPECT_THROW(generate(engine, {}, {}), RequestError);
    EXPECT_THROW(generate(engine, {1, 96}, {}), RequestError);  // vocab is 96
    EXPECT_THROW(generate(engine, {-1}, {}), RequestError);
    EXPECT_THROW(generate(engine, {1}, {.top_p = 2.0f}), RequestError);
    EXPECT_THROW(generate(engine, {1}, {.n = 0}), RequestError);
    EXPECT_THROW(generate(engine, {1}, {.max_tokens = 2, .min_tokens = 3}), RequestError);
    EXPECT_THROW(generate(engine, {1}, {.stop = {""}}), RequestError);
    EXPECT_THROW(generate(engine, {1}, {.presence_penalty = 3}), RequestError);
    EXPECT_THROW(generate(engine, {1}, {.logprobs = kMaxLogprobs + 1}), RequestError);
    EXPECT_THROW(engine.tokenize(Prompt::from_text("no tokenizer here")), RequestError);
    EXPECT_EQ(tokens_of(generate(engine, {1, 2, 3},
                                 {.temperature = 0, .max_tokens = 3, .ignore_eos = true}))
                  .size(),
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
        KvCache cache(engine_model(engine).kv_cache_shape(int64_t(prompt.size())));
        const SequenceStep step{.tokens = prompt, .cache = &cache, .all_logits = true};
        OwnedTensor out = engine_model(engine).forward({&step, 1}, engine_pool(engine));
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

// EngineConfig.device: where no GPU can run the model (a CPU-only build, or no CUDA device
// here) opening it fails with a message naming the device; "sim" and nonsense are refused by name.
TEST(DeviceEngine, AModelOnAMissingGpuFailsClearly) {
    test::TempDir dir;
    test::write_tiny_model(dir.str());
    auto message_of = [&](const std::string& device) -> std::string {
        try {
            Engine::open({.model_dir = dir.str(), .device = device});
        } catch (const Error& e) {
            return e.what();
        }
        return "";
    };
    if (!cuda_compiled() || cuda_device_count() == 0) {
        const std::string why = message_of("cuda:0");
        EXPECT_NE(why.find("cuda:0"), std::string::npos) << why;
    }
    EXPECT_NE(message_of("sim").find("cpu or cuda:N"), std::string::npos);
    EXPECT_NE(message_of("tpu:0").find("tpu:0"), std::string::npos);
}

// EngineConfig.kv_cache_type: f16 and bf16 hold twice the positions in the same budget, and
// their logprobs stay within 1e-2 of the f32 cache's on the tiny model (the golden tests state
// the logit tolerance per architecture); anything else is refused by name.
TEST_F(EngineTest, KvCacheTypeHoldsTwiceThePositionsAndStaysClose) {
    const std::vector<int32_t> tokens = {5, 17, 3, 9, 42, 7, 64, 1, 33, 12, 80, 2, 6};
    auto open_with = [&](const std::string& type) {
        return Engine::open({.model_dir = dir_->str(),
                             .n_threads = 2,
                             .pin_threads = false,
                             .kv_cache_bytes = int64_t(1) << 20,
                             .kv_cache_type = type});
    };
    Engine f32 = open_with("f32");
    const std::vector<float> reference = f32.score(tokens);
    for (const std::string type : {"f16", "bf16"}) {
        Engine half = open_with(type);
        EXPECT_EQ(half.stats().kv_blocks_total, 2 * f32.stats().kv_blocks_total) << type;
        const std::vector<float> got = half.score(tokens);
        ASSERT_EQ(got.size(), reference.size());
        double worst = 0;
        for (size_t i = 0; i < got.size(); ++i)
            worst = std::max(worst, std::fabs(double(got[i]) - reference[i]));
        EXPECT_LT(worst, 1e-2) << type;
        RecordProperty(type + "_max_logprob_diff", std::to_string(worst));
        EXPECT_EQ(tokens_of(generate(half, {3, 4, 5},
                                     {.temperature = 0, .max_tokens = 6, .ignore_eos = true}))
                      .size(),
                  6u);
    }
    for (const std::string bad : {"q8_0", "f64", "F16", ""}) {
        try {
            open_with(bad);
            ADD_FAILURE() << "accepted kv_cache_type '" << bad << "'";
        } catch (const Error& e) {
            EXPECT_NE(std::string(e.what()).find("'" + bad + "'"), std::string::npos) << e.what();
        }
    }
}

TEST_F(EngineTest, OpenRejectsBadConfig) {
    EXPECT_THROW(Engine::open({.model_dir = ""}), Error);
    EXPECT_THROW(Engine::open({.model_dir = dir_->str(), .n_threads = -1}), Error);
}

}  // namespace
}  // namespace tandem

// Structured output through the Engine on the demo model (a real tokenizer and real logits):
// every sample of a constrained request is valid for its spec (checked independently with
// nlohmann-json and std::regex), streams agree with the result, the grammar outranks min_tokens
// and ignore_eos, and bad specs fail only their own request.
#include <gtest/gtest.h>

#include <tandem/engine.h>
#include <filesystem>
#include <mutex>
#include <regex>

#include <nlohmann/json.hpp>

#include "tests/test_util.h"

namespace tandem {
namespace {

namespace fs = std::filesystem;

class EngineGrammar : public ::testing::Test {
  protected:
    static void SetUpTestSuite() {
        const fs::path demo = fs::path(test::data_dir()).parent_path().parent_path() / "models" /
                              "demo" / "tandem-demo-moe";
        engine_ = new Engine(
            Engine::open({.model_dir = demo.string(), .n_threads = 2, .pin_threads = false}));
    }
    static void TearDownTestSuite() { delete engine_; }
    static Engine* engine_;
};

Engine* EngineGrammar::engine_ = nullptr;

Prompt question() {
    return Prompt::chat({{"user", "Describe a city as JSON."}});
}

// The schema's constraints, checked without xgrammar.
void expect_matches_schema(const std::string& text) {
    SCOPED_TRACE(text);
    nlohmann::json v;
    ASSERT_NO_THROW(v = nlohmann::json::parse(text));
    ASSERT_TRUE(v.is_object());
    for (const char* key : {"name", "size", "tags"})
        ASSERT_TRUE(v.contains(key)) << "missing required " << key;
    for (const auto& [key, value] : v.items())
        EXPECT_TRUE(key == "name" || key == "size" || key == "tags" || key == "ok")
            << "strict: no other properties, got " << key;
    ASSERT_TRUE(v["name"].is_string());
    EXPECT_LE(v["name"].get<std::string>().size(), 40u);  // 10 characters, UTF-8 <= 4 bytes
    ASSERT_TRUE(v["size"].is_string());
    const std::string size = v["size"];
    EXPECT_TRUE(size == "small" || size == "large") << size;
    ASSERT_TRUE(v["tags"].is_array());
    EXPECT_LE(v["tags"].size(), 3u);
    for (const auto& tag : v["tags"])
        EXPECT_TRUE(tag.is_number_integer());
    if (v.contains("ok")) {
        EXPECT_TRUE(v["ok"].is_boolean());
    }
}

constexpr const char* kSchema = R"({
  "type": "object",
  "properties": {
    "name": {"type": "string", "maxLength": 10},
    "size": {"enum": ["small", "large"]},
    "tags": {"type": "array", "items": {"type": "integer"}, "maxItems": 3},
    "ok": {"type": "boolean"}
  },
  "required": ["name", "size", "tags"],
  "additionalProperties": false
})";

TEST_F(EngineGrammar, EverySampleFollowsTheSchema) {
    TANDEM_SEEDED(seed);
    const RequestOutput out = engine_->generate(
        question(),
        {.n = 6,
         .temperature = 1.0f,
         .seed = seed,
         .max_tokens = 160,
         .grammar = GrammarSpec{.kind = GrammarSpec::Kind::JsonSchema, .text = kSchema}});
    ASSERT_TRUE(out.error.empty()) << out.error;
    int complete = 0;
    for (const Completion& c : out.completions) {
        if (c.finish_reason == FinishReason::Length) continue;  // cut short: a prefix
        ++complete;
        EXPECT_EQ(c.finish_reason, FinishReason::Stop);
        expect_matches_schema(c.text);
    }
    EXPECT_GE(complete, 4) << "most samples should complete in 160 tokens";
}

TEST_F(EngineGrammar, JsonObjectAndRegexAndGrammar) {
    TANDEM_SEEDED(seed);
    SamplingParams p{.n = 3, .temperature = 1.0f, .seed = seed, .max_tokens = 120};
    p.grammar = GrammarSpec{.kind = GrammarSpec::Kind::JsonObject};
    for (const Completion& c : engine_->generate(question(), p).completions)
        if (c.finish_reason == FinishReason::Stop) {
            nlohmann::json v;
            ASSERT_NO_THROW(v = nlohmann::json::parse(c.text)) << c.text;
            EXPECT_TRUE(v.is_object()) << c.text;
        }
    const std::string regex = "(yes|no), [0-9]{1,3} (apples|pears)";
    p.grammar = GrammarSpec{.kind = GrammarSpec::Kind::Regex, .text = regex};
    for (const Completion& c : engine_->generate(question(), p).completions) {
        EXPECT_EQ(c.finish_reason, FinishReason::Stop);
        EXPECT_TRUE(std::regex_match(c.text, std::regex(regex))) << c.text;
    }
    p.grammar = GrammarSpec{.kind = GrammarSpec::Kind::Ebnf,
                            .text = R"(root ::= "The " animal " is " ("big" | "small") "."
                                       animal ::= "cat" | "dog" | "horse")"};
    for (const Completion& c : engine_->generate(question(), p).completions) {
        EXPECT_EQ(c.finish_reason, FinishReason::Stop);
        EXPECT_TRUE(std::regex_match(c.text, std::regex("The (cat|dog|horse) is (big|small)\\.")))
            << c.text;
    }
}

TEST_F(EngineGrammar, StreamedDeltasMakeTheResult) {
    TANDEM_SEEDED(seed);
    std::mutex mutex;
    std::map<int32_t, std::string> streamed;
    RequestHandle handle = engine_->submit(
        question(),
        {.n = 2,
         .temperature = 1.0f,
         .seed = seed,
         .max_tokens = 160,
         .grammar = GrammarSpec{.kind = GrammarSpec::Kind::JsonSchema, .text = kSchema}},
        [&](const StreamDelta& d) {
            std::lock_guard lock(mutex);
            streamed[d.index] += d.text;
        });
    const RequestOutput& out = handle.wait();
    std::lock_guard lock(mutex);
    for (const Completion& c : out.completions)
        EXPECT_EQ(streamed[c.index], c.text);
}

TEST_F(EngineGrammar, TheGrammarOutranksMinTokensAndIgnoreEos) {
    // "ok" is complete after its tokens: min_tokens would mask EOS, ignore_eos would run on;
    // the only valid continuation is the end.
    const RequestOutput out = engine_->generate(
        question(), {.temperature = 0,
                     .max_tokens = 50,
                     .min_tokens = 20,
                     .ignore_eos = true,
                     .grammar = GrammarSpec{.kind = GrammarSpec::Kind::Regex, .text = "ok"}});
    ASSERT_TRUE(out.error.empty()) << out.error;
    EXPECT_EQ(out.completions[0].text, "ok");
    EXPECT_EQ(out.completions[0].finish_reason, FinishReason::Stop);
    EXPECT_LT(out.completions[0].token_ids.size(), 5u);
}

TEST_F(EngineGrammar, BadSpecsFailTheirRequestOnly) {
    for (GrammarSpec spec : {GrammarSpec{.kind = GrammarSpec::Kind::JsonSchema, .text = "{"},
                             GrammarSpec{.kind = GrammarSpec::Kind::Regex, .text = "(a"},
                             GrammarSpec{.kind = GrammarSpec::Kind::Ebnf, .text = "root ::= x"},
                             GrammarSpec{.kind = GrammarSpec::Kind::Regex, .text = ""}})
        EXPECT_THROW(engine_->generate(question(), {.max_tokens = 4, .grammar = spec}),
                     RequestError)
            << spec.text;
    const RequestOutput out = engine_->generate(question(), {.temperature = 0, .max_tokens = 4});
    EXPECT_EQ(out.completions[0].token_ids.size(), 4u);
}

TEST(EngineGrammarNoTokenizer, IsARequestError) {
    test::TempDir dir;
    test::write_tiny_model(dir.str());
    Engine engine = Engine::open({.model_dir = dir.str(), .n_threads = 1, .pin_threads = false});
    try {
        engine.generate(Prompt::tokens({1, 2, 3}),
                        {.max_tokens = 2,
                         .grammar = GrammarSpec{.kind = GrammarSpec::Kind::Regex, .text = "a"}});
        FAIL() << "no error";
    } catch (const RequestError& e) {
        EXPECT_NE(std::string(e.what()).find("tokenizer"), std::string::npos) << e.what();
    }
}

}  // namespace
}  // namespace tandem

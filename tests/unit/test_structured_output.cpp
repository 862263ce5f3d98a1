// Structured output (engine/src/structured_output.h) on real vocabularies: random walks that
// sample uniformly among the tokens the mask allows must always end in text that the spec
// accepts, checked independently of xgrammar (nlohmann-json for JSON and the schema's
// constraints, std::regex for regular expressions).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <random>
#include <regex>

#include <tandem/request.h>
#include <nlohmann/json.hpp>

#include "engine/src/structured_output.h"
#include "models/tokenizer/tokenizer.h"
#include "tests/test_util.h"

namespace tandem {
namespace {

namespace fs = std::filesystem;

fs::path repo_dir() {
    return fs::path(test::data_dir()).parent_path().parent_path();
}

struct Vocab {
    std::string name;
    fs::path dir;
};

// The committed tokenizers (byte-level BPE), and where present the real ones of ../shared:
// llama2's is SentencePiece with byte fallback, the other encoding xgrammar reads.
void PrintTo(const Vocab& v, std::ostream* os) {
    *os << v.name;
}

std::vector<Vocab> vocabularies() {
    std::vector<Vocab> v = {{"demo", repo_dir() / "models" / "demo" / "tandem-demo-moe"},
                            {"chat_tiny", fs::path(test::data_dir()) / "chat_tiny"}};
    for (const char* name : {"llama2", "qwen3"}) {
        const fs::path dir = fs::path(test::shared_dir()) / "tokenizers" / name;
        if (fs::exists(dir / "tokenizer.json")) v.push_back({name, dir});
    }
    return v;
}

int32_t stop_id(const Tokenizer& tokenizer) {
    for (const char* eos : {"<|im_end|>", "<|endoftext|>", "</s>", "<|end_of_text|>"})
        if (auto id = tokenizer.token_to_id(eos)) return *id;
    ADD_FAILURE() << "no end-of-sequence token";
    return 0;
}

// JSON's grammar, whatever its numbers: nlohmann refuses only numbers no double holds (the
// grammar allows any exponent), which count as valid here.
bool valid_json(const std::string& text) {
    try {
        const nlohmann::json parsed = nlohmann::json::parse(text);
        (void)parsed;
        return true;
    } catch (const nlohmann::json::out_of_range& e) {
        return e.id == 406;  // number overflow
    } catch (const nlohmann::json::exception& e) {
        ADD_FAILURE() << e.what();
        return false;
    }
}

// Samples among the allowed tokens (a stop token as soon as it is allowed, so walks
// end) until the matcher terminates or `max_steps`. Returns the text, or nullopt if unfinished.
std::optional<std::string> random_walk(const Tokenizer& tokenizer, const GrammarCompiler& compiler,
                                       const GrammarSpec& spec, int32_t stop,
                                       const std::vector<uint8_t>& closing, std::mt19937_64& rng,
                                       int max_steps = 400) {
    GrammarMatcher matcher(compiler.compile(spec));
    std::vector<int32_t> ids;
    std::vector<float> logits(size_t(compiler.vocab_size()));
    for (int step = 0; step < max_steps; ++step) {
        std::fill(logits.begin(), logits.end(), 0.0f);
        matcher.mask(logits);
        std::vector<int32_t> allowed;
        for (size_t i = 0; i < logits.size(); ++i)
            if (!std::isinf(logits[i])) allowed.push_back(int32_t(i));
        EXPECT_FALSE(allowed.empty()) << "nothing allowed after " << ids.size() << " tokens";
        if (allowed.empty()) return std::nullopt;
        // Half the time a token that closes something (a quote, brace or bracket) if one is
        // allowed: uniform walks through JSON rarely end.
        std::vector<int32_t> closers;
        for (int32_t id : allowed)
            if (size_t(id) < closing.size() && closing[size_t(id)]) closers.push_back(id);
        const std::vector<int32_t>& pool =
            !closers.empty() && std::bernoulli_distribution(0.5)(rng) ? closers : allowed;
        int32_t token = pool[std::uniform_int_distribution<size_t>(0, pool.size() - 1)(rng)];
        if (std::find(allowed.begin(), allowed.end(), stop) != allowed.end()) token = stop;
        EXPECT_TRUE(matcher.accept(token)) << "an allowed token was refused: " << token;
        if (matcher.terminated()) {
            EXPECT_EQ(token, stop);
            return tokenizer.decode(ids);
        }
        ids.push_back(token);
    }
    return std::nullopt;
}

class StructuredOutput : public ::testing::TestWithParam<Vocab> {
  protected:
    void SetUp() override {
        tokenizer_ = std::make_unique<Tokenizer>(Tokenizer::load(GetParam().dir.string()));
        stop_ = stop_id(*tokenizer_);
        // Logits wider than the vocabulary, as models pad them: the padding is never allowed.
        vocab_size_ = int64_t(tokenizer_->vocab_size()) + 37;
        compiler_ = std::make_unique<GrammarCompiler>(*tokenizer_, vocab_size_,
                                                      std::vector<int32_t>{stop_});
        closing_.resize(tokenizer_->vocab_size());
        for (size_t id = 0; id < closing_.size(); ++id) {
            const int32_t ids[1] = {int32_t(id)};
            const std::string text = tokenizer_->decode(ids);
            closing_[id] = text.find_first_of("\"}]") != std::string::npos;
        }
    }

    // Walks `runs` times; at least half must finish within the step cap, and every finished
    // one must satisfy `check`.
    void walk(const GrammarSpec& spec, const std::function<void(const std::string&)>& check,
              int runs = 12) {
        TANDEM_SEEDED(seed);
        std::mt19937_64 rng(seed);
        int finished = 0;
        for (int run = 0; run < runs; ++run) {
            const std::optional<std::string> text =
                random_walk(*tokenizer_, *compiler_, spec, stop_, closing_, rng);
            if (!text) continue;
            ++finished;
            SCOPED_TRACE("output: " + *text);
            check(*text);
        }
        EXPECT_GE(finished, runs / 2) << "random walks did not finish";
    }

    std::unique_ptr<Tokenizer> tokenizer_;
    std::unique_ptr<GrammarCompiler> compiler_;
    std::vector<uint8_t> closing_;  // per id: its text has a quote, brace or bracket
    int32_t stop_ = 0;
    int64_t vocab_size_ = 0;
};

TEST_P(StructuredOutput, JsonObjectWalksEndInJsonObjects) {
    walk({.kind = GrammarSpec::Kind::JsonObject}, [](const std::string& text) {
        const nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
        ASSERT_TRUE(valid_json(text)) << "not JSON";
        if (!j.is_discarded())
            EXPECT_TRUE(j.is_object());
        else
            EXPECT_EQ(text.front(), '{');
    });
}

TEST_P(StructuredOutput, JsonSchemaWalksSatisfyTheSchema) {
    const std::string schema = R"({
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 12},
            "age": {"type": "integer", "minimum": 0, "maximum": 150},
            "role": {"enum": ["admin", "user", "guest"]},
            "tags": {"type": "array", "items": {"type": "boolean"}, "maxItems": 3}
        },
        "required": ["name", "age", "role"],
        "additionalProperties": false
    })";
    walk({.kind = GrammarSpec::Kind::JsonSchema, .text = schema}, [](const std::string& text) {
        const nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
        ASSERT_TRUE(valid_json(text)) << "not JSON";
        ASSERT_FALSE(j.is_discarded()) << "a number out of a double's range";
        ASSERT_TRUE(j.is_object());
        for (const auto& [key, value] : j.items())
            EXPECT_TRUE(key == "name" || key == "age" || key == "role" || key == "tags") << key;
        ASSERT_TRUE(j.contains("name") && j.contains("age") && j.contains("role"));
        EXPECT_TRUE(j["name"].is_string());
        ASSERT_TRUE(j["age"].is_number_integer());
        EXPECT_GE(j["age"].get<int64_t>(), 0);
        EXPECT_LE(j["age"].get<int64_t>(), 150);
        const std::string role = j["role"].get<std::string>();
        EXPECT_TRUE(role == "admin" || role == "user" || role == "guest") << role;
        if (j.contains("tags")) {
            ASSERT_TRUE(j["tags"].is_array());
            EXPECT_LE(j["tags"].size(), 3u);
            for (const auto& t : j["tags"])
                EXPECT_TRUE(t.is_boolean());
        }
    });
}

TEST_P(StructuredOutput, RegexWalksMatchTheRegex) {
    const std::string pattern = "[a-z]{2,5}-[0-9]{3}( [A-Z]+)?";
    walk({.kind = GrammarSpec::Kind::Regex, .text = pattern}, [&](const std::string& text) {
        EXPECT_TRUE(std::regex_match(text, std::regex(pattern)));
    });
}

TEST_P(StructuredOutput, EbnfWalksFollowTheGrammar) {
    const std::string grammar = R"g(root ::= "(" item ("," item)* ")"
item ::= [0-9]+ | "x")g";
    walk({.kind = GrammarSpec::Kind::Ebnf, .text = grammar}, [](const std::string& text) {
        EXPECT_TRUE(std::regex_match(text, std::regex(R"(\(([0-9]+|x)(,([0-9]+|x))*\))")));
    });
}

TEST_P(StructuredOutput, PaddingAndStopAreMaskedWhereTheyMustBe) {
    GrammarMatcher matcher(compiler_->compile({.kind = GrammarSpec::Kind::Regex, .text = "ab"}));
    std::vector<float> logits(size_t(vocab_size_), 1.0f);
    matcher.mask(logits);
    // Nothing of the padding, and no stop before "ab" is complete.
    for (int64_t i = int64_t(tokenizer_->vocab_size()); i < vocab_size_; ++i)
        EXPECT_TRUE(std::isinf(logits[size_t(i)])) << "padding id " << i;
    EXPECT_TRUE(std::isinf(logits[size_t(stop_)]));
    EXPECT_FALSE(matcher.accept(stop_));
    EXPECT_FALSE(matcher.accept(int32_t(vocab_size_)));  // out of range: refused, no throw
    // The wrong width is an error, not a silent partial mask.
    std::vector<float> narrow(logits.size() - 1);
    EXPECT_THROW(matcher.mask(narrow), std::invalid_argument);
}

TEST_P(StructuredOutput, BadSpecsAreRequestErrorsNamingTheKind) {
    auto message = [&](const GrammarSpec& spec) {
        try {
            compiler_->compile(spec);
        } catch (const RequestError& e) {
            return std::string(e.what());
        }
        return std::string("(accepted)");
    };
    EXPECT_NE(
        message({.kind = GrammarSpec::Kind::JsonSchema, .text = "{not json"}).find("json_schema"),
        std::string::npos);
    EXPECT_NE(message({.kind = GrammarSpec::Kind::Regex, .text = "a(b"}).find("regex"),
              std::string::npos);
    EXPECT_NE(message({.kind = GrammarSpec::Kind::Ebnf, .text = "root ::= undefined_rule"})
                  .find("grammar"),
              std::string::npos);
    // The compiler survives bad specs.
    EXPECT_NO_THROW(compiler_->compile({.kind = GrammarSpec::Kind::JsonObject}));
}

std::string vocab_name(const ::testing::TestParamInfo<Vocab>& param) {
    return param.param.name;
}

INSTANTIATE_TEST_SUITE_P(Vocabularies, StructuredOutput, ::testing::ValuesIn(vocabularies()),
                         vocab_name);

}  // namespace
}  // namespace tandem

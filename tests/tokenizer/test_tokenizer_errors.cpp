// Bad inputs: invalid UTF-8 text, malformed tokenizer.json, unknown component types, template
// syntax errors and unsupported template features. Each error must name what is at fault.
#include <gtest/gtest.h>

#include <string>

#include "kernels/error.h"
#include "models/tokenizer/chat_template.h"
#include "models/tokenizer/tokenizer.h"
#include "models/tokenizer/utf8.h"
#include "tests/test_util.h"

namespace tandem {
namespace {

using Json = nlohmann::json;

// A tiny byte-level BPE tokenizer.json: vocabulary of the letters a, b, "ab" and a space.
Json tiny_tokenizer() {
    return Json::parse(R"({
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "use_regex": true},
        "post_processor": null,
        "decoder": {"type": "ByteLevel"},
        "added_tokens": [{"id": 4, "content": "<eos>", "special": true, "lstrip": false,
                          "rstrip": false, "single_word": false, "normalized": false}],
        "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2, "\u0120": 3},
                  "merges": ["a b"]}
    })");
}

std::string load_error(const Json& tokenizer) {
    try {
        Tokenizer::from_json(tokenizer, Json(), "tokenizer.json");
    } catch (const Error& e) {
        return e.what();
    }
    return "";
}

std::string template_error(const std::string& source, const nlohmann::ordered_json& messages =
                                                          nlohmann::ordered_json::array()) {
    try {
        ChatTemplate(source).render({.messages = messages, .tools = nullptr});
    } catch (const Error& e) {
        return e.what();
    }
    return "";
}

TEST(TokenizerErrors, TinyTokenizerWorks) {
    const Tokenizer tok = Tokenizer::from_json(tiny_tokenizer(), Json(), "tiny");
    EXPECT_EQ(tok.encode("ab a<eos>"), (std::vector<int32_t>{2, 3, 0, 4}));
    EXPECT_EQ(tok.decode(std::vector<int32_t>{2, 3, 0, 4}), "ab a<eos>");
    EXPECT_EQ(tok.decode(std::vector<int32_t>{2, 4}, {.skip_special_tokens = true}), "ab");
}

// Decision: like HF (which only takes valid str), invalid UTF-8 is rejected, not replaced.
TEST(TokenizerErrors, InvalidUtf8IsRejectedWithItsOffset) {
    const Tokenizer tok = Tokenizer::from_json(tiny_tokenizer(), Json(), "tiny");
    for (const std::string& bad : {std::string("ab\xff"), std::string("a\xc3"),
                                   std::string("\xed\xa0\x80"),  // a lone surrogate (CESU)
                                   std::string("a\xc0\xafz"), std::string("\xf4\x90\x80\x80")}) {
        try {
            tok.encode(bad);
            ADD_FAILURE() << "accepted invalid UTF-8";
        } catch (const Error& e) {
            EXPECT_NE(std::string(e.what()).find("invalid UTF-8 at byte"), std::string::npos)
                << e.what();
        }
    }
}

TEST(TokenizerErrors, LossyDecodingFollowsMaximalSubparts) {
    EXPECT_EQ(utf8::lossy_utf8("a\xf0\x9f\x98"), "a\xEF\xBF\xBD");  // truncated 4-byte: one
    EXPECT_EQ(utf8::lossy_utf8("\xff\xfe"), "\xEF\xBF\xBD\xEF\xBF\xBD");
    EXPECT_EQ(utf8::lossy_utf8("\xed\xa0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");
    EXPECT_EQ(utf8::lossy_utf8("ok \xc3\xa9"), "ok \xc3\xa9");
}

TEST(TokenizerErrors, MalformedTokenizerJson) {
    EXPECT_NE(load_error(Json::array()).find("expected a JSON object"), std::string::npos);
    Json no_model = tiny_tokenizer();
    no_model.erase("model");
    EXPECT_NE(load_error(no_model).find("'model'"), std::string::npos);
    Json bad_merge = tiny_tokenizer();
    bad_merge["model"]["merges"] = Json::array({"a c"});
    EXPECT_NE(load_error(bad_merge).find("merges[0]"), std::string::npos) << load_error(bad_merge);
    Json bad_vocab = tiny_tokenizer();
    bad_vocab["model"]["vocab"]["x"] = "seven";
    EXPECT_NE(load_error(bad_vocab).find("'x'"), std::string::npos) << load_error(bad_vocab);
    Json bad_regex = tiny_tokenizer();
    bad_regex["pre_tokenizer"] =
        Json::parse(R"({"type": "Split", "pattern": {"Regex": "(["}, "behavior": "Isolated"})");
    EXPECT_NE(load_error(bad_regex).find("regex '(['"), std::string::npos) << load_error(bad_regex);
    test::TempDir dir;
    EXPECT_NE(std::string([&] {
                  try {
                      Tokenizer::load(dir.str());
                  } catch (const Error& e) {
                      return std::string(e.what());
                  }
                  return std::string();
              }())
                  .find("tokenizer.json: not found"),
              std::string::npos);
}

TEST(TokenizerErrors, UnknownComponentTypeIsNamed) {
    const std::pair<const char*, const char*> cases[] = {
        {"normalizer", "Precompiled"}, {"pre_tokenizer", "BertPreTokenizer"},
        {"decoder", "WordPiece"},      {"post_processor", "Fancy"},
        {"model", "Unigram"},
    };
    for (const auto& [field, type] : cases) {
        Json t = tiny_tokenizer();
        if (std::string(field) == "model")
            t[field]["type"] = type;
        else
            t[field] = Json{{"type", type}};
        const std::string message = load_error(t);
        EXPECT_NE(message.find(std::string("'") + type + "'"), std::string::npos) << message;
        EXPECT_NE(message.find(field), std::string::npos) << message;
    }
}

TEST(ChatTemplateErrors, SyntaxErrorsSayWhere) {
    EXPECT_NE(template_error("hello\n  {{ 1 + }}").find("line 2, column 10"), std::string::npos)
        << template_error("hello\n  {{ 1 + }}");
    EXPECT_NE(template_error("{% if x %}no end").find("missing 'elif' or 'else' or 'endif'"),
              std::string::npos);
    EXPECT_NE(template_error("a\nb {{ x").find("line 2, column 3: unclosed"), std::string::npos)
        << template_error("a\nb {{ x");
    EXPECT_NE(template_error("{{ 'abc }}").find("line 1, column 1: unclosed '{{'"),
              std::string::npos);
}

TEST(ChatTemplateErrors, UnsupportedFeaturesAreNamed) {
    EXPECT_NE(template_error("{% include 'x.j2' %}").find("unsupported tag 'include'"),
              std::string::npos);
    EXPECT_NE(template_error("{{ 'a' | frobnicate }}").find("unsupported filter 'frobnicate'"),
              std::string::npos);
    EXPECT_NE(template_error("{{ 1 is prime }}").find("unsupported test 'prime'"),
              std::string::npos);
    EXPECT_NE(template_error("{{ 'a'.zfill(3) }}").find("unsupported method 'zfill'"),
              std::string::npos);
    EXPECT_NE(template_error("{{ raise_exception('bad role') }}").find("bad role"),
              std::string::npos);
    EXPECT_NE(template_error("x\n{{ messages[0].content.x.y }}").find("line 2"), std::string::npos);
}

TEST(ChatTemplate, JinjaSemantics) {
    auto render = [](const std::string& source) {
        return ChatTemplate(source).render(
            {.messages = nlohmann::ordered_json::array(), .tools = nullptr});
    };
    EXPECT_EQ(
        render("{% for x in [1, 2, 3] %}{{ loop.index }}{{ ',' if not loop.last }}{% endfor %}"),
        "1,2,3");
    EXPECT_EQ(render("  {% if true %}\n  yes\n  {% endif %}\nend"), "  yes\nend");
    EXPECT_EQ(render("{%- set ns = namespace(n=0) %}{% for i in range(4) %}{% set ns.n = ns.n + i "
                     "%}{% endfor %}{{ ns.n }}"),
              "6");
    EXPECT_EQ(render("{{ [1, 'a', none, true, 1.5] }}"), "[1, 'a', None, True, 1.5]");
    EXPECT_EQ(render("{{ {'b': 1, 'a': [1.0, \"x\"]} | tojson }}"), R"({"b": 1, "a": [1.0, "x"]})");
    EXPECT_EQ(render("{{ 'a,b,,c'.split(',') | join('|') }} {{ '  x '.strip() }}!"), "a|b||c x!");
    EXPECT_EQ(render("{{ 'hello'[::-1] }} {{ [1,2,3][-1] }} {{ 7 // 2 }} {{ -7 % 3 }}"),
              "olleh 3 3 2");
    EXPECT_EQ(
        render("{% macro f(a, b='B') %}{{ a }}{{ b }}{% endmacro %}{{ f('A') }}{{ f(1, b=2) }}"),
        "AB12");
    EXPECT_EQ(
        render("{% for x in range(10) %}{% if x == 3 %}{% break %}{% endif %}{{ x }}{% endfor %}"),
        "012");
    EXPECT_EQ(render("{{ undefined_thing is defined }} {{ none is none }} {{ 'x' is string }}"),
              "False True True");
}

}  // namespace
}  // namespace tandem

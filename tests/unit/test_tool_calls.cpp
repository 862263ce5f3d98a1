// Tool calling (tools/server/tool_calls.h, engine/src/chat_prompt.h): model outputs in each
// family's syntax parsed into the expected calls (GLM-4.5's values typed by the schema, as
// vLLM does); malformed, cut-off and damaged outputs handled without a crash; streams that never
// leak the start of a call into the content; the grammars of tool_choice "required" / named, walked
// at random on a real vocabulary, always produce calls that parse and satisfy the parameter
// schemas; chat prompts with tool calls and tool results rendered as transformers renders them.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>

#include <nlohmann/json.hpp>

#include "engine/src/chat_prompt.h"
#include "engine/src/structured_output.h"
#include "models/tokenizer/chat_template.h"
#include "tests/test_util.h"
#include "tests/tokenizer/tokenizer_fixtures.h"
#include "tools/server/api_error.h"
#include "tools/server/tool_calls.h"

namespace tandem::server {
namespace {

using nlohmann::json;

const char* kTools = R"([
  {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
   "parameters": {"type": "object", "properties": {
     "city": {"type": "string", "maxLength": 12},
     "unit": {"enum": ["celsius", "fahrenheit"]}}, "required": ["city"]}}},
  {"type": "function", "function": {"name": "add", "parameters": {"type": "object",
   "properties": {"a": {"type": "integer", "minimum": 0, "maximum": 999},
                  "b": {"type": "integer", "minimum": 0, "maximum": 999}},
   "required": ["a", "b"], "additionalProperties": false}}}])";

ToolRequest request(const char* choice = "auto", bool parallel = true) {
    json body = {{"tools", json::parse(kTools)}, {"parallel_tool_calls", parallel}};
    body["tool_choice"] = json::parse(choice);
    return *read_tool_request(body);
}

// Two calls as GLM-4.5 writes them (its template's layout), after some text.
const std::string kGlmTwoCalls =
    "Let me check.\n<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>Paris"
    "</arg_value>\n</tool_call>\n<tool_call>add\n<arg_key>a</arg_key>\n<arg_value>1</arg_value>\n"
    "<arg_key>b</arg_key>\n<arg_value>2</arg_value>\n</tool_call>";

void expect_calls(const ParsedOutput& out, const std::string& content,
                  const std::vector<std::pair<std::string, json>>& calls) {
    EXPECT_EQ(out.content, content);
    ASSERT_EQ(out.calls.size(), calls.size());
    for (size_t i = 0; i < calls.size(); ++i) {
        EXPECT_EQ(out.calls[i].name, calls[i].first);
        EXPECT_EQ(json::parse(out.calls[i].arguments), calls[i].second);
        EXPECT_TRUE(out.calls[i].id.starts_with("call_")) << out.calls[i].id;
    }
}

// Recorded outputs of each family (as the models write them) -> the calls.
TEST(ToolCalls, ParsesEachFamily) {
    const ToolRequest r = request("\"auto\"");
    const json paris = {{"city", "Paris"}}, sum = {{"a", 1}, {"b", 2}};
    expect_calls(parse_tool_calls(ToolCallFormat::Hermes,
                                  "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", "
                                  "\"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n"
                                  "<tool_call>\n{\"name\": \"add\", \"arguments\": {\"a\": 1, "
                                  "\"b\": 2}}\n</tool_call>",
                                  r),
                 "Let me check.", {{"get_weather", paris}, {"add", sum}});
    expect_calls(parse_tool_calls(ToolCallFormat::Llama3Json,
                                  "<|python_tag|>{\"name\": \"get_weather\", \"parameters\": "
                                  "{\"city\": \"Paris\"}}",
                                  r),
                 "", {{"get_weather", paris}});
    expect_calls(parse_tool_calls(ToolCallFormat::Llama3Json,
                                  "{\"name\": \"add\", \"parameters\": {\"a\": 1, \"b\": 2}}; "
                                  "{\"name\": \"get_weather\", \"parameters\": {\"city\": "
                                  "\"Paris\"}}",
                                  r),
                 "", {{"add", sum}, {"get_weather", paris}});
    expect_calls(parse_tool_calls(ToolCallFormat::Mistral,
                                  "[TOOL_CALLS] [{\"name\": \"add\", \"arguments\": {\"a\": 1, "
                                  "\"b\": 2}}, {\"name\": \"get_weather\", \"arguments\": "
                                  "\"{\\\"city\\\": \\\"Paris\\\"}\"}]",
                                  r),
                 "", {{"add", sum}, {"get_weather", paris}});
    expect_calls(
        parse_tool_calls(ToolCallFormat::Mistral, "[TOOL_CALLS]add[ARGS]{\"a\": 1, \"b\": 2}", r),
        "", {{"add", sum}});
    expect_calls(
        parse_tool_calls(ToolCallFormat::DeepSeekV3,
                         "Sure.<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>"
                         "get_weather\n```json\n{\"city\": \"Paris\"}\n```<｜tool▁call▁end｜>"
                         "<｜tool▁call▁begin｜>function<｜tool▁sep｜>add\n```json\n{\"a\": 1, "
                         "\"b\": 2}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>",
                         r),
        "Sure.", {{"get_weather", paris}, {"add", sum}});
    expect_calls(parse_tool_calls(ToolCallFormat::Glm45, kGlmTwoCalls, r), "Let me check.",
                 {{"get_weather", paris}, {"add", sum}});
}

// GLM-4.5's values, typed as vLLM's glm45 parser types them: a parameter declared "string"
// keeps its text, even when it looks like JSON; any other value is JSON where it parses, else
// the text.
TEST(ToolCalls, Glm45ValuesAreTypedByTheSchema) {
    json body = {{"tools", json::parse(kTools)}};
    body["tools"].push_back(json::parse(R"({"type": "function", "function": {"name": "search",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"},
        "filters": {"type": "object"}, "tags": {"type": "array"}, "safe": {"type": "boolean"},
        "limit": {"type": ["integer", "null"]}}}}})"));
    const ToolRequest r = *read_tool_request(body);
    auto args = [&](const std::string& text) {
        const ParsedOutput out = parse_tool_calls(ToolCallFormat::Glm45, text, r);
        EXPECT_EQ(out.calls.size(), 1u) << text;
        return out.calls.empty() ? json() : json::parse(out.calls[0].arguments);
    };
    EXPECT_EQ(args("<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>123</arg_value>"
                   "\n</tool_call>"),
              (json{{"city", "123"}}));
    EXPECT_EQ(args("<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>\"Paris\""
                   "</arg_value>\n<arg_key>unit</arg_key>\n<arg_value>celsius</arg_value>\n"
                   "</tool_call>"),
              (json{{"city", "\"Paris\""}, {"unit", "celsius"}}));
    // Untyped (an enum) and integer parameters: JSON when it parses, else the text.
    EXPECT_EQ(args("<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>Paris"
                   "</arg_value>\n<arg_key>unit</arg_key>\n<arg_value>\"celsius\"</arg_value>\n"
                   "</tool_call>"),
              (json{{"city", "Paris"}, {"unit", "celsius"}}));
    EXPECT_EQ(args("<tool_call>add\n<arg_key>a</arg_key>\n<arg_value>one</arg_value>\n"
                   "<arg_key>b</arg_key>\n<arg_value> 2 </arg_value>\n</tool_call>"),
              (json{{"a", "one"}, {"b", 2}}));
    EXPECT_EQ(args("<tool_call>search\n<arg_key>query</arg_key>\n<arg_value>a <b> c\nd"
                   "</arg_value>\n<arg_key>filters</arg_key>\n<arg_value>{\"lang\": [\"en\"]}"
                   "</arg_value>\n<arg_key>tags</arg_key>\n<arg_value>[1, \"x\"]</arg_value>\n"
                   "<arg_key>safe</arg_key>\n<arg_value>true</arg_value>\n<arg_key>limit"
                   "</arg_key>\n<arg_value>null</arg_value>\n</tool_call>"),
              json::parse(R"({"query": "a <b> c\nd", "filters": {"lang": ["en"]},
                              "tags": [1, "x"], "safe": true, "limit": null})"));
    // The layouts models drift into: no newline after the name (GLM-4.7), white space around
    // the tags, a call without arguments; a repeated key keeps its last value.
    EXPECT_EQ(args("<tool_call>add<arg_key>a</arg_key><arg_value>1</arg_value><arg_key>b"
                   "</arg_key><arg_value>2</arg_value></tool_call>"),
              (json{{"a", 1}, {"b", 2}}));
    EXPECT_EQ(args("<tool_call> add \n <arg_key> a </arg_key> \n\n <arg_value>1</arg_value> "
                   "<arg_key>a</arg_key><arg_value>3</arg_value>\n</tool_call>"),
              (json{{"a", 3}}));
    EXPECT_EQ(args("<tool_call>search\n</tool_call>"), json::object());
    EXPECT_EQ(args("<tool_call>search</tool_call>"), json::object());
}

TEST(ToolCalls, WhatDoesNotParseIsContent) {
    const ToolRequest r = request("\"auto\"");
    for (const char* text :
         {"Just text, no calls.", "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"c",
          "<tool_call>\n{\"name\": \"unknown\", \"arguments\": {}}\n</tool_call>",
          "<tool_call>\n{\"arguments\": {}}\n</tool_call>",
          "<tool_call>\n{\"name\": \"add\", \"arguments\": [1]}\n</tool_call>"}) {
        const ParsedOutput out = parse_tool_calls(ToolCallFormat::Hermes, text, r);
        EXPECT_TRUE(out.calls.empty()) << text;
        EXPECT_EQ(out.content, text);
    }
    // GLM-4.5: a call that is cut off, names no known function, or breaks the pair syntax
    // leaves the whole output as content.
    for (const char* text :
         {"<tool_call>add\n<arg_key>a</arg_key>\n<arg_value>1</arg_value>",
          "<tool_call>add\n<arg_key>a</arg_key>\n<arg_value>1</tool_call>",
          "<tool_call>add\n<arg_key>a</arg_key>\n</tool_call>",
          "<tool_call>add\n<arg_key>a\n<arg_value>1</arg_value>\n</tool_call>",
          "<tool_call>add\nsome words<arg_key>a</arg_key><arg_value>1</arg_value></tool_call>",
          "<tool_call>add\n<arg_key></arg_key><arg_value>1</arg_value></tool_call>",
          "<tool_call>add\n<arg_value>1</arg_value></tool_call>",
          "<tool_call>\n<arg_key>a</arg_key><arg_value>1</arg_value></tool_call>",
          "<tool_call>unknown\n<arg_key>a</arg_key><arg_value>1</arg_value></tool_call>",
          "<tool_call>\n{\"name\": \"add\", \"arguments\": {\"a\": 1, \"b\": 2}}\n</tool_call>",
          "Hello </tool_call> <tool_call>",
          "<tool_call>add\n<arg_key>a</arg_key><arg_value>1</arg_value></tool_call>\n<tool_call>"
          "add\n"}) {
        const ParsedOutput out = parse_tool_calls(ToolCallFormat::Glm45, text, r);
        EXPECT_TRUE(out.calls.empty()) << text;
        EXPECT_EQ(out.content, text);
    }
    // Llama 3: text that merely starts with a brace is not a call.
    EXPECT_TRUE(
        parse_tool_calls(ToolCallFormat::Llama3Json, "{not json} said the model", r).calls.empty());
}

TEST(ToolCalls, ParallelFalseKeepsTheFirstCall) {
    const ParsedOutput out = parse_tool_calls(
        ToolCallFormat::Hermes,
        "<tool_call>\n{\"name\": \"add\", \"arguments\": {\"a\": 1, \"b\": 2}}\n</tool_call>\n"
        "<tool_call>\n{\"name\": \"add\", \"arguments\": {\"a\": 3, \"b\": 4}}\n</tool_call>",
        request("\"auto\"", /*parallel=*/false));
    ASSERT_EQ(out.calls.size(), 1u);
    EXPECT_EQ(json::parse(out.calls[0].arguments)["a"], 1);
}

TEST(ToolCalls, BadToolRequestsName400Fields) {
    auto param = [](json body) {
        try {
            (void)read_tool_request(body);
        } catch (const ApiError& e) {
            EXPECT_EQ(e.status(), 400);
            return e.param();
        }
        return std::string("(accepted)");
    };
    const json tools = json::parse(kTools);
    EXPECT_EQ(param({{"tools", "x"}}), "tools");
    EXPECT_EQ(param({{"tools", {{{"type", "function"}, {"function", {{"name", ""}}}}}}}),
              "tools[0].function.name");
    EXPECT_EQ(param({{"tools", {{{"type", "retrieval"}}}}}), "tools[0]");
    EXPECT_EQ(param({{"tools", {tools[0], tools[0]}}}), "tools[1]");
    EXPECT_EQ(param({{"tools", tools}, {"tool_choice", "sometimes"}}), "tool_choice");
    EXPECT_EQ(param({{"tools", tools},
                     {"tool_choice", {{"type", "function"}, {"function", {{"name", "nope"}}}}}}),
              "tool_choice");
    EXPECT_EQ(param({{"tool_choice", "required"}}), "tool_choice");
    EXPECT_EQ(param({{"tools", tools}, {"parallel_tool_calls", 1}}), "parallel_tool_calls");
    EXPECT_EQ(param({{"tools", tools}, {"tool_choice", "required"}}), "(accepted)");
}

// Streaming in random pieces: the streamed content never holds any part of a call, and
// content + calls equal the whole output's parse.
TEST(ToolCalls, StreamsHoldBackWhatMayBeACall) {
    TANDEM_SEEDED(seed);
    std::mt19937_64 rng(seed);
    const ToolRequest r = request("\"auto\"");
    const std::vector<std::pair<ToolCallFormat, std::string>> outputs = {
        {ToolCallFormat::Hermes,
         "I will add. <tool_call>\n{\"name\": \"add\", \"arguments\": {\"a\": 1, \"b\": 2}}\n"
         "</tool_call>"},
        {ToolCallFormat::Hermes, "A plain answer with <tool and < signs."},
        {ToolCallFormat::Mistral,
         "[TOOL_CALLS][{\"name\": \"add\", \"arguments\": {\"a\": 1, "
         "\"b\": 2}}]"},
        {ToolCallFormat::Llama3Json, "  {\"name\": \"add\", \"parameters\": {\"a\": 1, \"b\": 2}}"},
        {ToolCallFormat::Llama3Json, "No call here {really}."},
        {ToolCallFormat::DeepSeekV3,
         "Ok<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>add\n```json\n"
         "{\"a\": 1, \"b\": 2}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>"},
        {ToolCallFormat::Glm45, kGlmTwoCalls},
        {ToolCallFormat::Glm45, "No call: <tool, </tool_call> and <arg_key> alone."}};
    for (const auto& [format, text] : outputs) {
        SCOPED_TRACE(text);
        ToolCallStream stream(format, &r);
        std::string streamed;
        for (size_t at = 0; at < text.size();) {
            const size_t n = std::uniform_int_distribution<size_t>(1, 6)(rng);
            streamed += stream.push(text.substr(at, n));
            at += n;
        }
        const ParsedOutput end = stream.finish();
        const ParsedOutput whole = parse_tool_calls(format, text, r);
        EXPECT_EQ(streamed + end.content, whole.content);
        ASSERT_EQ(end.calls.size(), whole.calls.size());
        for (size_t i = 0; i < end.calls.size(); ++i)
            EXPECT_EQ(end.calls[i].arguments, whole.calls[i].arguments);
    }
}

// GLM-4.5 streams cut off anywhere (every prefix of valid outputs, each split into random
// pieces) and outputs with a character dropped at random: never a crash, and the stream's
// content and calls always equal the whole-output parse of the same text.
TEST(ToolCalls, Glm45StreamsOfCutAndDamagedOutputsMatchTheWholeParse) {
    TANDEM_SEEDED(seed);
    std::mt19937_64 rng(seed);
    const ToolRequest r = request("\"auto\"");
    auto check = [&](const std::string& text, bool damaged) {
        SCOPED_TRACE(text);
        ToolCallStream stream(ToolCallFormat::Glm45, &r);
        std::string streamed;
        for (size_t at = 0; at < text.size();) {
            const size_t n = std::uniform_int_distribution<size_t>(1, 8)(rng);
            streamed += stream.push(text.substr(at, n));
            at += n;
        }
        const ParsedOutput end = stream.finish();
        const ParsedOutput whole = parse_tool_calls(ToolCallFormat::Glm45, text, r);
        EXPECT_EQ(streamed + end.content, whole.content);
        EXPECT_EQ(end.calls.size(), whole.calls.size());
        for (size_t i = 0; i < std::min(end.calls.size(), whole.calls.size()); ++i) {
            EXPECT_EQ(end.calls[i].name, whole.calls[i].name);
            EXPECT_EQ(end.calls[i].arguments, whole.calls[i].arguments);
        }
        // Content never holds a call's first characters (a damaged call can be content).
        if (!damaged && !whole.calls.empty()) {
            EXPECT_EQ(streamed.find("<tool"), std::string::npos);
        }
        return whole.calls.size();
    };
    const std::string outputs[] = {
        kGlmTwoCalls, std::string("<tool_call>add\n<arg_key>a</arg_key>\n<arg_value>7") +
                          "</arg_value>\n<arg_key>b</arg_key>\n<arg_value>8</arg_value>\n" +
                          "</tool_call>"};
    for (const std::string& text : outputs) {
        size_t complete = 0;
        for (size_t len = 0; len <= text.size(); ++len)
            complete = check(text.substr(0, len), false);
        EXPECT_GE(complete, 1u);  // the whole output parses into calls
        for (int i = 0; i < 200; ++i) {
            std::string damaged = text;
            damaged.erase(std::uniform_int_distribution<size_t>(0, text.size() - 1)(rng), 1);
            check(damaged, true);
        }
    }
}

TEST(ToolCalls, FormatsByNameAndFromTheChatTemplate) {
    for (const char* name : {"hermes", "llama3_json", "mistral", "deepseek_v3", "glm45"})
        EXPECT_STREQ(tool_call_format_name(*tool_call_format_by_name(name)), name);
    EXPECT_FALSE(tool_call_format_by_name("glm").has_value());
    std::ifstream in(test::data_dir() + "/tokenizer/glm45/chat_template.jinja");
    ASSERT_TRUE(in);
    const std::string glm((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    EXPECT_EQ(detect_tool_call_format(glm), ToolCallFormat::Glm45);
    EXPECT_EQ(detect_tool_call_format("{{ '<tool_call>' }}"), ToolCallFormat::Hermes);
}

// GLM-4.5's grammar is EBNF with one rule per function; a named function leaves the others out.
// (The random walks below skip the walks that never finish, which is where an unbounded string
// would show: the bounds are checked in the text.)
TEST(ToolCalls, Glm45GrammarNamesOnlyTheChosenFunctions) {
    const GrammarSpec all = tool_call_grammar(ToolCallFormat::Glm45, request("\"required\""));
    EXPECT_EQ(all.kind, GrammarSpec::Kind::Ebnf);
    EXPECT_NE(all.text.find("<tool_call>get_weather\\n"), std::string::npos) << all.text;
    EXPECT_NE(all.text.find("<tool_call>add\\n"), std::string::npos) << all.text;
    EXPECT_NE(all.text.find("{0,7}"), std::string::npos) << all.text;
    // The bounds it can hold exactly: city's maxLength, add's integer ranges.
    EXPECT_NE(all.text.find("raw_char{0,12}"), std::string::npos) << all.text;
    EXPECT_NE(all.text.find("\"0\" | \"1\" |"), std::string::npos) << all.text;
    EXPECT_NE(all.text.find("| \"999\")"), std::string::npos) << all.text;
    const GrammarSpec named = tool_call_grammar(
        ToolCallFormat::Glm45, request(R"({"type": "function", "function": {"name": "add"}})"));
    EXPECT_EQ(named.text.find("get_weather"), std::string::npos) << named.text;
    EXPECT_EQ(named.text.find("{0,7}"), std::string::npos) << named.text;
}

// The grammar of "required" / a named function, walked at random among the tokens it allows,
// ends in calls that parse, name a tool, and keep the parameter schema.
class ToolGrammar : public ::testing::TestWithParam<ToolCallFormat> {};

TEST_P(ToolGrammar, RandomWalksMakeValidCalls) {
    TANDEM_REQUIRE_TOKENIZER(tok, "demo");
    const int32_t stop = *tok->token_to_id("<|im_end|>");
    const int64_t vocab = int64_t(tok->vocab_size());
    GrammarCompiler compiler(*tok, vocab, {stop});
    TANDEM_SEEDED(seed);
    std::mt19937_64 rng(seed);
    for (const char* choice :
         {"\"required\"", R"({"type": "function", "function": {"name": "add"}})"}) {
        const ToolRequest r = request(choice);
        const GrammarSpec spec = tool_call_grammar(GetParam(), r);
        int finished = 0;
        for (int run = 0; run < 16; ++run) {
            GrammarMatcher matcher(compiler.compile(spec));
            std::vector<int32_t> ids;
            std::vector<float> logits(static_cast<size_t>(vocab));
            for (int step = 0; step < 300 && !matcher.terminated(); ++step) {
                std::fill(logits.begin(), logits.end(), 0.0f);
                matcher.mask(logits);
                std::vector<int32_t> allowed;
                for (size_t i = 0; i < logits.size(); ++i)
                    if (!std::isinf(logits[i])) allowed.push_back(int32_t(i));
                ASSERT_FALSE(allowed.empty());
                // Prefer ending and closing, or walks through strings rarely finish.
                int32_t token =
                    allowed[std::uniform_int_distribution<size_t>(0, allowed.size() - 1)(rng)];
                for (int32_t id : allowed) {
                    const int32_t one[1] = {id};
                    const std::string piece = tok->decode(one);
                    if (id == stop || (piece.find_first_of("\"}]") != std::string::npos &&
                                       std::bernoulli_distribution(0.3)(rng))) {
                        token = id;
                        if (id == stop) break;
                    }
                }
                ASSERT_TRUE(matcher.accept(token));
                if (token != stop) ids.push_back(token);
            }
            if (!matcher.terminated()) continue;
            ++finished;
            const std::string text = tok->decode(ids, {.skip_special_tokens = false});
            const ParsedOutput out = parse_tool_calls(GetParam(), text, r);
            ASSERT_FALSE(out.calls.empty()) << text;
            EXPECT_TRUE(out.content.empty()) << text;
            for (const ToolCall& call : out.calls) {
                const json args = json::parse(call.arguments);
                if (r.choice == ToolRequest::Choice::Named) {
                    EXPECT_EQ(call.name, "add") << text;
                }
                if (call.name == "add") {
                    ASSERT_TRUE(args["a"].is_number_integer() && args["b"].is_number_integer())
                        << text;
                    EXPECT_TRUE(args["a"] >= 0 && args["a"] <= 999 && args.size() == 2) << text;
                } else {
                    ASSERT_EQ(call.name, "get_weather");
                    ASSERT_TRUE(args["city"].is_string()) << text;
                    const std::string city = args["city"];
                    EXPECT_LE(std::count_if(city.begin(), city.end(),
                                            [](char c) { return (c & 0xC0) != 0x80; }),
                              12)
                        << text;  // maxLength counts code points
                    if (args.contains("unit")) {
                        EXPECT_TRUE(args["unit"] == "celsius" || args["unit"] == "fahrenheit");
                    }
                }
            }
        }
        EXPECT_GE(finished, 8) << choice;
    }
}

// GLM-4.5's EBNF compiles for each kind of parameter schema it writes a rule for, and for
// schemas it leaves open.
TEST(ToolGrammar, Glm45CompilesForEveryKindOfParameter) {
    TANDEM_REQUIRE_TOKENIZER(tok, "demo");
    GrammarCompiler compiler(*tok, int64_t(tok->vocab_size()), {*tok->token_to_id("<|im_end|>")});
    const json tools = json::parse(R"([
      {"type": "function", "function": {"name": "all", "parameters": {"type": "object",
       "properties": {"c": {"const": 3}, "e": {"enum": [1, "two", null, "a<b"]},
         "n": {"type": "number"}, "b": {"type": "boolean"}, "z": {"type": "null"},
         "o": {"type": "object"}, "a": {"type": "array"}, "u": {"type": ["string", "null"]},
         "s": {"type": "string"}, "lo": {"type": "string", "minLength": 2},
         "hi": {"type": "string", "maxLength": 3}, "bad": {"type": "string", "maxLength": -1},
         "i": {"type": "integer"}, "big": {"type": "integer", "minimum": -9223372036854775807,
                                           "maximum": 9223372036854775807},
         "neg": {"type": "integer", "minimum": -3, "maximum": 3}, "any": {}},
       "required": ["c", "s"]}}},
      {"type": "function", "function": {"name": "open"}},
      {"type": "function", "function": {"name": "closed", "parameters": {"type": "object",
       "additionalProperties": false}}},
      {"type": "function", "function": {"name": "odd name \"quoted\" \u00e9"}}])");
    for (const char* choice : {"required", "auto"}) {
        const ToolRequest r = *read_tool_request({{"tools", tools}, {"tool_choice", choice}});
        const GrammarSpec spec = tool_call_grammar(ToolCallFormat::Glm45, r);
        EXPECT_NO_THROW((void)compiler.compile(spec)) << spec.text;
    }
}

std::string format_name(const ::testing::TestParamInfo<ToolCallFormat>& param) {
    return tool_call_format_name(param.param);
}

INSTANTIATE_TEST_SUITE_P(Formats, ToolGrammar,
                         ::testing::Values(ToolCallFormat::Hermes, ToolCallFormat::Llama3Json,
                                           ToolCallFormat::Mistral, ToolCallFormat::DeepSeekV3,
                                           ToolCallFormat::Glm45),
                         format_name);

// Chat prompts with tools, tool calls and tool results, from the engine's Prompt form, against
// transformers' rendering (tests/data/tokenizer/*/chat.json).
// Renders the fixture cases that have tools or tool calls (and no extra variables) from the
// engine's Prompt form; returns how many it checked.
int expect_prompts_like_transformers(const Tokenizer& tokenizer,
                                     const nlohmann::ordered_json& cases) {
    const ChatTemplate tojson("{{ value | tojson }}");
    int checked = 0;
    for (const auto& c : cases) {
        bool has_tools = !c["tools"].is_null();
        for (const auto& m : c["messages"])
            has_tools |= m.contains("tool_calls");
        if (!has_tools || !c["kwargs"].empty()) continue;
        SCOPED_TRACE(c["name"].get<std::string>());
        Prompt prompt;
        prompt.add_generation_prompt = c["add_generation_prompt"];
        if (!c["tools"].is_null()) prompt.tools = c["tools"].dump();
        for (const auto& m : c["messages"]) {
            ChatMessage message{.role = m["role"], .content = m.value("content", "")};
            for (const auto& call : m.value("tool_calls", nlohmann::ordered_json::array())) {
                const auto& args = call["function"]["arguments"];
                // A client sends arguments as text; transformers' fixture may hold an object,
                // which it writes with tojson: the same text.
                message.tool_calls.push_back(
                    {.name = call["function"]["name"],
                     .arguments = args.is_string()
                                      ? args.get<std::string>()
                                      : tojson.render({.variables = {{"value", args}}})});
            }
            prompt.messages.push_back(std::move(message));
        }
        EXPECT_EQ(render_chat_prompt(tokenizer, prompt), c["text"].get<std::string>());
        ++checked;
    }
    return checked;
}

class ToolPromptFixture : public ::testing::TestWithParam<std::string> {};

TEST_P(ToolPromptFixture, RendersLikeTransformers) {
    TANDEM_REQUIRE_TOKENIZER(tok, GetParam());
    EXPECT_GE(expect_prompts_like_transformers(*tok, test::read_fixture(GetParam(), "chat.json")),
              2);
}

INSTANTIATE_TEST_SUITE_P(Real, ToolPromptFixture, ::testing::Values("qwen3", "deepseek_v3"));

// GLM-4.5's format (the template written for tests/data/tokenizer/glm45): its calls iterate
// the arguments' items, so the client's JSON text must reach it as an object. The template is
// put on the vocabulary of tests/data/chat_tiny in a temporary directory.
TEST(ToolPrompt, Glm45TemplateRendersCallsAndResultsLikeTransformers) {
    const std::string data = test::data_dir();
    auto read = [](const std::string& path) {
        std::ifstream in(path);
        EXPECT_TRUE(in) << path;
        return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    };
    std::string tmpl = read(data + "/tokenizer/glm45/chat_template.jinja");
    tmpl.pop_back();  // the file's final newline is not the template's
    nlohmann::ordered_json config =
        nlohmann::ordered_json::parse(read(data + "/chat_tiny/tokenizer_config.json"));
    config["chat_template"] = tmpl;
    const std::filesystem::path dir = std::filesystem::temp_directory_path() /
                                      ("tandem_glm45_" + std::to_string(std::random_device{}()));
    std::filesystem::create_directories(dir);
    std::filesystem::copy_file(data + "/chat_tiny/tokenizer.json", dir / "tokenizer.json");
    std::ofstream(dir / "tokenizer_config.json") << config.dump();
    const Tokenizer tok = Tokenizer::load(dir.string());
    std::filesystem::remove_all(dir);
    EXPECT_EQ(expect_prompts_like_transformers(tok, test::read_fixture("glm45", "chat.json")), 5);
}

// A template without tools (the demo model's) gets them in a system message, Hermes-style.
TEST(ToolPrompt, TemplatesWithoutToolsGetThemInTheSystemMessage) {
    TANDEM_REQUIRE_TOKENIZER(tok, "demo");
    Prompt prompt = Prompt::chat({{.role = "user", .content = "Add 1 and 2."}});
    prompt.tools = json::parse(kTools).dump();
    const std::string text = render_chat_prompt(*tok, prompt);
    EXPECT_TRUE(text.starts_with("<|im_start|>system\n# Tools")) << text;
    EXPECT_NE(text.find("\"name\":\"add\""), std::string::npos) << text;
    EXPECT_NE(text.find("<tool_call>"), std::string::npos);
    EXPECT_NE(text.find("<|im_start|>user\nAdd 1 and 2."), std::string::npos);
}

}  // namespace
}  // namespace tandem::server

// The real chat templates of qwen3, deepseek_v3, llama3_1 and the demo model rendered exactly as
// transformers.apply_chat_template (fixtures from tools/make_tokenizer_fixtures.py); and
// templates written for the test in the formats of models whose own cannot be downloaded here:
// gpt-oss's harmony (tools/make_harmony_fixture.py) and GLM-4.5 / 4.6
// (tools/make_glm_fixture.py), each with the Jinja features its model's template leans on.
#include <gtest/gtest.h>

#include <fstream>
#include <iterator>

#include "kernels/error.h"
#include "models/tokenizer/chat_template.h"
#include "tests/tokenizer/tokenizer_fixtures.h"

namespace tandem {
namespace {

// Renders each case of a chat.json fixture and compares it with transformers' text. A case that
// throws fails alone, so one unsupported feature does not hide the others' results.
void expect_renders_like_transformers(const ChatTemplate& tmpl, const nlohmann::ordered_json& cases,
                                      const nlohmann::ordered_json& variables) {
    for (const auto& c : cases) {
        SCOPED_TRACE(c["name"].get<std::string>());
        ChatTemplateInputs inputs{.messages = c["messages"],
                                  .tools = c["tools"],
                                  .add_generation_prompt = c["add_generation_prompt"],
                                  .variables = variables};
        for (const auto& [k, v] : c["kwargs"].items())
            inputs.variables[k] = v;
        std::string got;
        try {
            got = tmpl.render(inputs);
        } catch (const Error& e) {
            ADD_FAILURE() << e.what();
            continue;
        }
        EXPECT_EQ(got, c["text"].get<std::string>());
    }
}

// A template written for the test: tests/data/tokenizer/<name>/chat_template.jinja.
std::string read_test_template(const std::string& name) {
    const std::string path = test::data_dir() + "/tokenizer/" + name + "/chat_template.jinja";
    std::ifstream in(path);
    if (!in) throw std::runtime_error("missing " + path);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    text.pop_back();  // the file's final newline is not the template's
    return text;
}

class ChatTemplateFixture : public ::testing::TestWithParam<std::string> {};

TEST_P(ChatTemplateFixture, RendersLikeTransformers) {
    TANDEM_REQUIRE_TOKENIZER(tok, GetParam());
    const auto cases = test::read_fixture(GetParam(), "chat.json");
    ASSERT_GE(cases.size(), 12u);
    ASSERT_FALSE(tok->chat_template().empty());
    expect_renders_like_transformers(ChatTemplate(tok->chat_template()), cases,
                                     special_token_variables(*tok));
}

INSTANTIATE_TEST_SUITE_P(Real, ChatTemplateFixture,
                         ::testing::Values("qwen3", "deepseek_v3", "llama3_1", "demo"));

// Harmony: system header with the reasoning effort, developer instructions and the tools'
// namespace (a macro and tojson), analysis / final / commentary channels, <|return|> and <|call|>.
TEST(ChatTemplateHarmony, RendersLikeTransformers) {
    const auto cases = test::read_fixture("harmony", "chat.json");
    ASSERT_EQ(cases.size(), 12u);
    expect_renders_like_transformers(ChatTemplate(read_test_template("harmony")), cases,
                                     nlohmann::ordered_json::object());
}

// GLM-4.5: [gMASK]<sop>, the tools as JSON lines in <tools></tools>, <think> kept only after the
// last user turn, calls as <arg_key>/<arg_value> pairs (strings raw, other values tojson),
// consecutive tool results under one <|observation|>, enable_thinking=False.
TEST(ChatTemplateGlm45, RendersLikeTransformers) {
    const auto cases = test::read_fixture("glm45", "chat.json");
    ASSERT_EQ(cases.size(), 14u);
    expect_renders_like_transformers(ChatTemplate(read_test_template("glm45")), cases,
                                     nlohmann::ordered_json::object());
}

}  // namespace
}  // namespace tandem

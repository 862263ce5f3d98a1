// The real chat templates of qwen3, deepseek_v3, llama3_1 and the demo model rendered exactly as
// transformers.apply_chat_template (fixtures from tools/make_tokenizer_fixtures.py); and a
// gpt-oss harmony-format template (tools/make_harmony_fixture.py: gpt-oss's own cannot be
// downloaded here) with the Jinja features gpt-oss's leans on.
#include <gtest/gtest.h>

#include <fstream>
#include <iterator>

#include "kernels/error.h"
#include "models/tokenizer/chat_template.h"
#include "tests/tokenizer/tokenizer_fixtures.h"

namespace tandem {
namespace {

class ChatTemplateFixture : public ::testing::TestWithParam<std::string> {};

TEST_P(ChatTemplateFixture, RendersLikeTransformers) {
    TANDEM_REQUIRE_TOKENIZER(tok, GetParam());
    const auto cases = test::read_fixture(GetParam(), "chat.json");
    ASSERT_GE(cases.size(), 12u);
    ASSERT_FALSE(tok->chat_template().empty());
    const ChatTemplate tmpl(tok->chat_template());
    for (const auto& c : cases) {
        SCOPED_TRACE(c["name"].get<std::string>());
        ChatTemplateInputs inputs{.messages = c["messages"],
                                  .tools = c["tools"],
                                  .add_generation_prompt = c["add_generation_prompt"],
                                  .variables = special_token_variables(*tok)};
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

INSTANTIATE_TEST_SUITE_P(Real, ChatTemplateFixture,
                         ::testing::Values("qwen3", "deepseek_v3", "llama3_1", "demo"));

// Harmony: system header with the reasoning effort, developer instructions and the tools'
// namespace (a macro and tojson), analysis / final / commentary channels, <|return|> and <|call|>.
TEST(ChatTemplateHarmony, RendersLikeTransformers) {
    std::ifstream in(test::data_dir() + "/tokenizer/harmony/chat_template.jinja");
    ASSERT_TRUE(in) << "missing tests/data/tokenizer/harmony/chat_template.jinja";
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    text.pop_back();  // the file's final newline is not the template's
    const ChatTemplate tmpl(text);
    const auto cases = test::read_fixture("harmony", "chat.json");
    ASSERT_EQ(cases.size(), 12u);
    for (const auto& c : cases) {
        SCOPED_TRACE(c["name"].get<std::string>());
        ChatTemplateInputs inputs{.messages = c["messages"],
                                  .tools = c["tools"],
                                  .add_generation_prompt = c["add_generation_prompt"]};
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

}  // namespace
}  // namespace tandem

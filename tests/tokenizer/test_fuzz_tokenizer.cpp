// Drives the tokenizer fuzz harness (tests/fuzz/fuzz_tokenizer.cpp) with random mutations of a
// small valid tokenizer.json and of a chat template that uses most template features, so every
// CI run (and the ASan+UBSan build) exercises both parsers on hostile input.
#include <gtest/gtest.h>

#include <random>
#include <string>

#include "kernels/error.h"
#include "models/tokenizer/chat_template.h"
#include "models/tokenizer/tokenizer.h"
#include "tests/test_util.h"

extern "C" int LLVMFuzzerTestOneInputTokenizer(const uint8_t* data, size_t size);

namespace {

const char* const kTokenizerJson =
    R"({"version":"1.0","added_tokens":[{"id":5,"content":"<s>","single_word":false,"lstrip":false,)"
    R"("rstrip":false,"normalized":false,"special":true}],"normalizer":{"type":"NFC"},)"
    R"("pre_tokenizer":{"type":"Sequence","pretokenizers":[{"type":"Split","pattern":{"Regex":"\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+|\\s+"},)"
    R"("behavior":"Isolated","invert":false},{"type":"ByteLevel","add_prefix_space":false,"trim_offsets":true,"use_regex":false}]},)"
    R"("post_processor":{"type":"TemplateProcessing","single":[{"SpecialToken":{"id":"<s>","type_id":0}},{"Sequence":{"id":"A","type_id":0}}],)"
    R"("pair":[{"Sequence":{"id":"A","type_id":0}}],"special_tokens":{"<s>":{"id":"<s>","ids":[5],"tokens":["<s>"]}}},)"
    R"("decoder":{"type":"ByteLevel","add_prefix_space":true,"trim_offsets":true,"use_regex":true},)"
    R"("model":{"type":"BPE","dropout":null,"unk_token":null,"continuing_subword_prefix":null,"end_of_word_suffix":null,)"
    R"("fuse_unk":false,"byte_fallback":false,"ignore_merges":false,"vocab":{"a":0,"b":1,"ab":2,"Ġ":3,"Ġab":4},"merges":["a b","Ġ ab"]}})";

const char* const kTemplate =
    "{%- set ns = namespace(n=0) -%}{{ bos_token }}{% for m in messages %}"
    "{%- if m['role'] == 'system' %}[S]{{ m.content | trim }}{% elif loop.last %}[L]{{ "
    "m.content|upper }}"
    "{% else %}[{{ m.role }}:{{ loop.index }}]{{ m['content'] ~ '!' }}{% endif %}{% set ns.n = "
    "ns.n + 1 %}"
    "{% endfor %}{% if add_generation_prompt %}<gen {{ ns.n }}>{% endif %}{{ messages | length }}"
    "{{ 'x' if messages[0].content.startswith('Be') else 'y' }}{{ eos_token }}";

void mutate_and_run(std::mt19937_64& rng, const std::string& base, uint8_t selector, int rounds) {
    const std::string alphabet = "{}[]\":,%-#~|.()'=!<>0123456789abcdefsetforifendlo \\u\xc3\xff";
    for (int round = 0; round < rounds; ++round) {
        std::string input(1, char(selector));
        input += base;
        const int edits = 1 + int(rng() % 4);
        for (int e = 0; e < edits && input.size() > 1; ++e) {
            const size_t at = 1 + rng() % (input.size() - 1);
            switch (rng() % 4) {
                case 0: input[at] = alphabet[rng() % alphabet.size()]; break;
                case 1: input[at] = char(rng()); break;
                case 2: input.erase(at, 1 + rng() % 8); break;
                default: input.insert(at, 1, alphabet[rng() % alphabet.size()]);
            }
        }
        LLVMFuzzerTestOneInputTokenizer(reinterpret_cast<const uint8_t*>(input.data()),
                                        input.size());
    }
}

// The unmutated seeds are valid, so the mutations start from inputs that reach deep code.
TEST(FuzzTokenizer, SeedsAreValid) {
    const tandem::Tokenizer tokenizer =
        tandem::Tokenizer::from_json(nlohmann::json::parse(kTokenizerJson), nullptr, "seed");
    EXPECT_EQ(tokenizer.encode("ab ab"), (std::vector<int32_t>{5, 2, 3, 2}));
    const tandem::ChatTemplate tmpl{std::string(kTemplate)};
    tandem::ChatTemplateInputs inputs;
    inputs.messages = nlohmann::ordered_json::parse(
        R"([{"role":"system","content":" Be brief. "},{"role":"user","content":"Hi"},{"role":"assistant","content":"ok"}])");
    inputs.add_generation_prompt = true;
    inputs.variables = {{"bos_token", "<s>"}, {"eos_token", "</s>"}};
    EXPECT_EQ(tmpl.render(inputs), "<s>[S]Be brief.[user:2]Hi![L]OK<gen 3>3y</s>");
}

TEST(FuzzTokenizer, TokenizerJsonSurvivesRandomMutations) {
    TANDEM_SEEDED(seed);
    std::mt19937_64 rng(seed);
    mutate_and_run(rng, kTokenizerJson, 0, 1500);
}

TEST(FuzzTokenizer, ChatTemplateSurvivesRandomMutations) {
    TANDEM_SEEDED(seed);
    std::mt19937_64 rng(seed);
    mutate_and_run(rng, kTemplate, 1, 3000);
}

}  // namespace

namespace {

// Inputs the fuzzers found crashing the template engine; each must now be a clean error.
std::string template_error(const std::string& source) {
    try {
        const tandem::ChatTemplate tmpl{source};
        tandem::ChatTemplateInputs inputs;
        inputs.messages = nlohmann::ordered_json::parse(R"([{"role":"user","content":"hi"}])");
        (void)tmpl.render(inputs);
    } catch (const tandem::Error& e) {
        return e.what();
    }
    return "";
}

TEST(FuzzFindings, EmptySubscriptIsASyntaxError) {
    EXPECT_NE(template_error("{{ messages[] }}").find("empty subscript"), std::string::npos);
}

TEST(FuzzFindings, HugeIntegerLiteralIsAnError) {
    EXPECT_NE(template_error("{{ 77777777777777777777777777 }}").find("out of range"),
              std::string::npos);
}

TEST(FuzzFindings, SelfContainingNamespaceIsAnError) {
    // Also leaked memory: a reference cycle of shared dicts is never freed (LeakSanitizer).
    for (const char* source : {"{% set ns = namespace(a=1) %}{% set ns.a = ns %}{{ ns }}",
                               "{% set ns = namespace(a=1) %}{% set ns.a = [1, [ns]] %}"})
        EXPECT_NE(template_error(source).find("contains the namespace itself"), std::string::npos)
            << source;
}

TEST(FuzzFindings, RecursiveMacroIsAnError) {
    EXPECT_NE(template_error("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}").find("nested"),
              std::string::npos);
}

}  // namespace

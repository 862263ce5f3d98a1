// Encode/decode of the real tokenizers against the fixtures written by
// tools/make_tokenizer_fixtures.py from HF `tokenizers`: ids without and with special tokens,
// decodes with and without special tokens, and streamed decoding equal to the full decode.
#include <gtest/gtest.h>

#include "models/tokenizer/utf8.h"
#include "tests/tokenizer/tokenizer_fixtures.h"

namespace tandem {
namespace {

using test::printable;

class TokenizerFixture : public ::testing::TestWithParam<std::string> {};

std::string ids_str(const std::vector<int32_t>& ids) {
    std::string out = "[";
    for (size_t k = 0; k < ids.size(); ++k)
        out += (k ? "," : "") + std::to_string(ids[k]);
    return out + "]";
}

TEST_P(TokenizerFixture, EncodeMatchesHuggingFace) {
    TANDEM_REQUIRE_TOKENIZER(tok, GetParam());
    const auto cases = test::read_fixture(GetParam(), "encode.json");
    ASSERT_GE(cases.size(), 300u);
    int failures = 0;
    for (const auto& c : cases) {
        const std::string text = c["text"];
        const auto want = c["ids"].get<std::vector<int32_t>>();
        const auto want_special = c["ids_special"].get<std::vector<int32_t>>();
        const auto got = tok->encode(text, {.add_special_tokens = false});
        const auto got_special = tok->encode(text, {.add_special_tokens = true});
        if (got != want || got_special != want_special) {
            if (++failures <= 10)
                ADD_FAILURE() << "text '" << printable(text) << "'\n  want " << ids_str(want)
                              << "\n  got  " << ids_str(got) << "\n  special want "
                              << ids_str(want_special) << " got " << ids_str(got_special);
        }
    }
    EXPECT_EQ(failures, 0) << "of " << cases.size() << " strings";
}

TEST_P(TokenizerFixture, DecodeMatchesHuggingFace) {
    TANDEM_REQUIRE_TOKENIZER(tok, GetParam());
    const auto cases = test::read_fixture(GetParam(), "encode.json");
    int failures = 0;
    for (const auto& c : cases) {
        const auto ids = c["ids_special"].get<std::vector<int32_t>>();
        const std::string want = c["decode"], want_skip = c["decode_skip"];
        const std::string got = tok->decode(ids);
        const std::string got_skip = tok->decode(ids, {.skip_special_tokens = true});
        if (got != want || got_skip != want_skip) {
            if (++failures <= 10)
                ADD_FAILURE() << "ids " << ids_str(ids) << "\n  want '" << printable(want)
                              << "'\n  got  '" << printable(got) << "'\n  skip want '"
                              << printable(want_skip) << "' got '" << printable(got_skip) << "'";
        }
    }
    EXPECT_EQ(failures, 0) << "of " << cases.size() << " strings";
}

// Streaming: every piece ends at a complete character and the pieces add up to the decode.
TEST_P(TokenizerFixture, IncrementalDecodeEqualsFullDecode) {
    TANDEM_REQUIRE_TOKENIZER(tok, GetParam());
    const auto cases = test::read_fixture(GetParam(), "encode.json");
    int failures = 0;
    for (const bool skip : {false, true}) {
        for (const auto& c : cases) {
            const auto ids = c["ids_special"].get<std::vector<int32_t>>();
            const std::string want = c[skip ? "decode_skip" : "decode"];
            IncrementalDecoder stream(*tok, {.skip_special_tokens = skip});
            std::string got;
            bool pieces_valid = true;
            for (const int32_t id : ids) {
                const std::string piece = stream.push(id);
                pieces_valid = pieces_valid && utf8::find_invalid(piece) == std::string::npos;
                got += piece;
            }
            got += stream.finish();
            if (got != want || !pieces_valid) {
                if (++failures <= 10)
                    ADD_FAILURE() << "ids " << ids_str(ids) << " skip " << skip << "\n  want '"
                                  << printable(want) << "'\n  got  '" << printable(got) << "'";
            }
        }
    }
    EXPECT_EQ(failures, 0);
}

INSTANTIATE_TEST_SUITE_P(Real, TokenizerFixture,
                         ::testing::Values("qwen3", "deepseek_v3", "llama3_1", "llama2", "demo"));

}  // namespace
}  // namespace tandem

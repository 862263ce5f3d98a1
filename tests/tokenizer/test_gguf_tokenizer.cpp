// The tokenizer built from GGUF metadata must encode and decode exactly as the tokenizer.json it
// came from: each real tokenizer of ../shared/tokenizers is converted to a tokenizer-only GGUF as
// llama.cpp's converter does (tests/gguf_writer.cpp), loaded back through load_tokenizer(), and
// run over the same HF fixtures as the tokenizer.json one (tests/data/tokenizer/).
#include <gtest/gtest.h>

#include "models/model_tokenizer.h"
#include "tests/gguf_writer.h"
#include "tests/tokenizer/tokenizer_fixtures.h"

namespace tandem {
namespace {

struct Case {
    std::string name;  // folder in ../shared/tokenizers and tests/data/tokenizer
    std::string pre;   // llama.cpp's tokenizer.ggml.pre for it ("" for SentencePiece)
    friend void PrintTo(const Case& c, std::ostream* out) { *out << c.name; }
};

class GgufTokenizer : public ::testing::TestWithParam<Case> {};

TEST_P(GgufTokenizer, EncodesAndDecodesLikeTokenizerJson) {
    const Case& c = GetParam();
    if (!std::filesystem::exists(test::tokenizer_dir(c.name) + "/tokenizer.json"))
        GTEST_SKIP() << test::tokenizer_dir(c.name)
                     << " not found: the real tokenizer files live in ../shared/tokenizers next "
                        "to the repository";
    test::TempDir dir;
    const std::string path = dir.str() + "/tokenizer.gguf";
    test::write_tokenizer_gguf(test::tokenizer_dir(c.name), c.pre, path);
    const Tokenizer tok = load_tokenizer(path);
    const Tokenizer* hf = test::shared_tokenizer(c.name);
    ASSERT_NE(hf, nullptr);
    EXPECT_EQ(tok.chat_template(), hf->chat_template());
    EXPECT_EQ(tok.bos_token(), hf->bos_token());

    const auto cases = test::read_fixture(c.name, "encode.json");
    ASSERT_GE(cases.size(), 300u);
    int failures = 0;
    for (const auto& f : cases) {
        const std::string text = f["text"];
        const auto want = f["ids"].get<std::vector<int32_t>>();
        const auto want_special = f["ids_special"].get<std::vector<int32_t>>();
        const auto got = tok.encode(text, {.add_special_tokens = false});
        const auto got_special = tok.encode(text, {.add_special_tokens = true});
        const std::string decoded = tok.decode(want_special);
        const std::string decoded_skip = tok.decode(want_special, {.skip_special_tokens = true});
        if (got != want || got_special != want_special || decoded != f["decode"] ||
            decoded_skip != f["decode_skip"]) {
            if (++failures <= 5)
                ADD_FAILURE() << "text '" << test::printable(text) << "' ids " << (got == want)
                              << (got_special == want_special) << " decode "
                              << (decoded == f["decode"]) << (decoded_skip == f["decode_skip"]);
        }
    }
    EXPECT_EQ(failures, 0) << "of " << cases.size() << " strings";
}

INSTANTIATE_TEST_SUITE_P(Real, GgufTokenizer,
                         ::testing::Values(Case{"qwen3", "qwen2"}, Case{"llama3_1", "llama-bpe"},
                                           Case{"deepseek_v3", "deepseek-v3"}, Case{"llama2", ""}),
                         [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace tandem

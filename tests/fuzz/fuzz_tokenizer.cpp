// Fuzz harnesses of the tokenizer's two parsers of untrusted files: tokenizer.json (as loaded
// by Tokenizer::from_json, then used to encode and decode) and chat templates (parsed, then
// rendered with a small conversation). Whatever the bytes, the result is a tokenizer or template
// that works, or a tandem::Error; never a crash, a hang or another exception type. The first
// input byte picks the harness. Built as a libFuzzer target with -DTANDEM_FUZZ=ON and linked
// into the unit tests, which drive it with mutated valid inputs.
#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "kernels/error.h"
#include "models/tokenizer/chat_template.h"
#include "models/tokenizer/tokenizer.h"

namespace {

void fuzz_tokenizer_json(std::string_view text) {
    nlohmann::json json = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (json.is_discarded()) return;  // not JSON: the loader's own parse reports that
    try {
        const tandem::Tokenizer tokenizer = tandem::Tokenizer::from_json(json, nullptr, "fuzz");
        for (std::string_view sample : {"", "Hello wörld 123 ab", "\t\n  <s> 日本語 🙂"}) {
            const std::vector<int32_t> ids = tokenizer.encode(sample);
            (void)tokenizer.decode(ids);
        }
    } catch (const tandem::Error&) {
    }
}

void fuzz_chat_template(std::string_view text) {
    try {
        const tandem::ChatTemplate tmpl{std::string(text)};
        tandem::ChatTemplateInputs inputs;
        inputs.messages = nlohmann::ordered_json::parse(
            R"([{"role":"system","content":"Be brief."},{"role":"user","content":"Hi ünïcode"},)"
            R"({"role":"assistant","content":"Hello."}])");
        inputs.add_generation_prompt = true;
        inputs.variables = {{"bos_token", "<s>"}, {"eos_token", "</s>"}};
        (void)tmpl.render(inputs);
    } catch (const tandem::Error&) {
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInputTokenizer(const uint8_t* data, size_t size) {
    if (size == 0) return 0;
    const std::string_view text(reinterpret_cast<const char*>(data) + 1, size - 1);
    if (data[0] % 2 == 0) {
        fuzz_tokenizer_json(text);
    } else {
        fuzz_chat_template(text);
    }
    return 0;
}

#ifdef TANDEM_LIBFUZZER_MAIN
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    return LLVMFuzzerTestOneInputTokenizer(data, size);
}
#endif

// The byte-to-unicode table of GPT-2 (openai/gpt-2 encoder.py bytes_to_unicode), as a constant.
#include "models/tokenizer/byte_level.h"

#include <array>

#include "models/tokenizer/utf8.h"

namespace tandem::byte_level {

namespace {

struct Tables {
    std::array<char32_t, 256> char_of{};
    std::array<int16_t, 324> byte_of{};
    Tables() {
        byte_of.fill(-1);
        int next = 256;
        for (int b = 0; b < 256; ++b) {
            const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
            char_of[b] = printable ? char32_t(b) : char32_t(next++);
            byte_of[char_of[b]] = int16_t(b);
        }
    }
};

const Tables& tables() {
    static const Tables t;
    return t;
}

}  // namespace

char32_t char_of_byte(uint8_t byte) {
    return tables().char_of[byte];
}

int byte_of_char(char32_t cp) {
    return cp < 324 ? tables().byte_of[cp] : -1;
}

std::optional<std::string> to_bytes(std::string_view token) {
    std::string out;
    out.reserve(token.size());
    size_t i = 0;
    while (i < token.size()) {
        if (utf8::valid_length(token, i) == 0) return std::nullopt;
        const int b = byte_of_char(utf8::next_code_point(token, i));
        if (b < 0) return std::nullopt;
        out += char(b);
    }
    return out;
}

std::string from_bytes(std::string_view bytes) {
    std::string out;
    for (const char c : bytes)
        utf8::append_code_point(out, char_of_byte(uint8_t(c)));
    return out;
}

}  // namespace tandem::byte_level

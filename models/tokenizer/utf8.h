// UTF-8 helpers shared by the tokenizer and the chat templates.
//
// Input text must be valid UTF-8: Hugging Face `tokenizers` only accepts Python `str` (a lone
// surrogate fails to convert and raises), so `check_utf8` rejects invalid bytes with the offset
// rather than silently substituting U+FFFD into a prompt. Output produced from token bytes, which
// may split a character, goes through `lossy_utf8`, Rust's `String::from_utf8_lossy` (one U+FFFD
// per maximal invalid subpart), which is what HF's decoders do.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace tandem::utf8 {

// Length of the valid UTF-8 sequence starting at s[i], or 0 when it is invalid or truncated.
size_t valid_length(std::string_view s, size_t i);

// Byte offset of the first invalid sequence, or npos when s is valid UTF-8.
size_t find_invalid(std::string_view s);

// Throws tandem::Error "<what>: invalid UTF-8 at byte N" when s is not valid UTF-8.
void check_utf8(std::string_view s, std::string_view what);

// Rust's String::from_utf8_lossy.
std::string lossy_utf8(std::string_view s);

// Decodes the code point at s[i] (s must be valid there) and advances i.
char32_t next_code_point(std::string_view s, size_t& i);

void append_code_point(std::string& out, char32_t cp);

// Byte length of a UTF-8 sequence from its lead byte (1 for invalid lead bytes).
inline size_t sequence_length(unsigned char lead) {
    if (lead < 0x80) return 1;
    if ((lead >> 5) == 0x6) return 2;
    if ((lead >> 4) == 0xE) return 3;
    if ((lead >> 3) == 0x1E) return 4;
    return 1;
}

}  // namespace tandem::utf8

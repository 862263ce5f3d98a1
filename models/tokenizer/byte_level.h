// GPT-2's byte-to-unicode table: byte-level BPE vocabularies spell each byte as one printable
// code point (33..126, 161..172 and 174..255 as themselves, the others as 256 + n in order).
// Tandem's BPE works on raw bytes instead, so the table is used once at load time to convert
// the vocabulary and merges, and by the ByteLevel decoder.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace tandem::byte_level {

char32_t char_of_byte(uint8_t byte);

// -1 when cp is not one of the 256 code points of the table.
int byte_of_char(char32_t cp);

// The raw bytes spelled by a byte-level token, or nullopt when a code point is not in the table.
std::optional<std::string> to_bytes(std::string_view token);

// The byte-level spelling of raw bytes.
std::string from_bytes(std::string_view bytes);

}  // namespace tandem::byte_level

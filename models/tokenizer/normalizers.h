// Normalizers of tokenizer.json: NFC, NFD, NFKC, NFKD (utf8proc), Lowercase, Prepend, Replace,
// Strip, Sequence. A normalizer maps a piece of text (valid UTF-8) to its normalized form; offsets
// are not tracked since Tandem needs ids, not alignments.
#pragma once

#include <memory>
#include <string>

#include <nlohmann/json.hpp>

namespace tandem {

class Normalizer {
  public:
    virtual ~Normalizer() = default;
    virtual std::string normalize(std::string text) const = 0;
};

// nullptr for a null normalizer. Throws tandem::Error naming an unknown "type".
std::unique_ptr<Normalizer> make_normalizer(const nlohmann::json& json);

// Unicode normal forms through utf8proc: "NFC", "NFD", "NFKC", "NFKD".
std::string unicode_normalize(const std::string& text, const char* form);

}  // namespace tandem

// Regex: a compiled PCRE2 pattern in UTF + UCP mode, the engine behind the Split pre-tokenizer
// and the Replace normalizer/decoder.
//
// Hugging Face `tokenizers` uses Oniguruma; the patterns real tokenizer.json files carry
// (\p{L}, \p{N}, (?i:...), lookahead, character ranges) mean the same in PCRE2 with UCP, which
// the fixture tests check on every file. Matching uses the JIT when available.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tandem {

class Regex {
  public:
    // Throws tandem::Error naming the pattern and PCRE2's message when it does not compile.
    explicit Regex(const std::string& pattern);
    ~Regex();
    Regex(Regex&&) noexcept;
    Regex& operator=(Regex&&) noexcept;

    // Non-empty matches of the pattern in text, left to right, as [begin, end) byte offsets.
    // text must be valid UTF-8.
    std::vector<std::pair<size_t, size_t>> find_all(std::string_view text) const;
    void find_all(std::string_view text, std::vector<std::pair<size_t, size_t>>& out) const;

    const std::string& pattern() const { return pattern_; }

  private:
    struct Impl;
    std::string pattern_;
    std::unique_ptr<Impl> impl_;
};

}  // namespace tandem

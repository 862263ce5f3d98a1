// AddedTokens: the "added_tokens" of tokenizer.json, found in the text before pre-tokenization.
//
// As in HF `tokenizers` (added_vocabulary.rs), tokens with normalized=false are matched on the
// raw text and the others on the normalized text of the pieces in between; at each position the
// leftmost, then longest, token wins; single_word requires non-word characters (or the text
// edge) around the match; lstrip/rstrip extend the match over adjacent whitespace.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

namespace tandem {

struct AddedToken {
    int32_t id = 0;
    std::string content;
    bool special = false;
    bool lstrip = false;
    bool rstrip = false;
    bool single_word = false;
    bool normalized = false;
};

// A piece of text: either an added token (id >= 0) or text to tokenize (id == -1).
struct TextSegment {
    size_t begin, end;
    int32_t id;
};

class AddedTokens {
  public:
    explicit AddedTokens(const nlohmann::json& added_tokens);  // the JSON array (or null)

    // Segments of text covering it. normalized: match the tokens whose flag `normalized` is set.
    void split(std::string_view text, bool normalized, std::vector<TextSegment>& out) const;

    const AddedToken* by_id(int32_t id) const;
    const AddedToken* by_content(std::string_view content) const;
    const std::vector<AddedToken>& tokens() const { return tokens_; }

  private:
    struct Trie {
        struct Node {
            std::unordered_map<unsigned char, int32_t> children;
            int32_t token = -1;  // index into tokens_
        };
        std::vector<Node> nodes{Node{}};
        bool first_byte[256] = {};
        void insert(const std::string& key, int32_t token);
        // The longest token starting at text[pos], or -1.
        int32_t longest(std::string_view text, size_t pos, size_t& length) const;
    };

    std::vector<AddedToken> tokens_;
    std::unordered_map<int32_t, size_t> by_id_;
    std::unordered_map<std::string, size_t> by_content_;
    Trie raw_, normalized_;
};

}  // namespace tandem

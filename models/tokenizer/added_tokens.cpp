// Added-token matching (HF tokenizers added_vocabulary.rs find_matches), with a byte trie
// instead of Aho-Corasick: added tokens are few and the first-byte table skips most positions.
#include "models/tokenizer/added_tokens.h"

#include <utf8proc.h>

#include "kernels/error.h"
#include "models/tokenizer/json_util.h"
#include "models/tokenizer/utf8.h"

namespace tandem {

namespace {

bool is_word_char(char32_t cp) {
    if (cp == '_') return true;
    const auto cat = utf8proc_category(utf8proc_int32_t(cp));
    return (cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_LO) ||
           (cat >= UTF8PROC_CATEGORY_ND && cat <= UTF8PROC_CATEGORY_NO);
}

// Rust's char::is_whitespace (the White_Space property).
bool is_white_space(char32_t cp) {
    return (cp >= 0x9 && cp <= 0xD) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
           (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F ||
           cp == 0x205F || cp == 0x3000;
}

// The last code point before byte `end` (text valid UTF-8), and its start in `start`.
char32_t code_point_before(std::string_view text, size_t end, size_t& start) {
    start = end - 1;
    while (start > 0 && (uint8_t(text[start]) & 0xC0) == 0x80)
        --start;
    size_t i = start;
    return utf8::next_code_point(text, i);
}

}  // namespace

void AddedTokens::Trie::insert(const std::string& key, int32_t token) {
    int32_t node = 0;
    for (const char c : key) {
        auto& children = nodes[size_t(node)].children;
        const auto it = children.find(uint8_t(c));
        if (it != children.end()) {
            node = it->second;
        } else {
            const auto child = int32_t(nodes.size());
            nodes[size_t(node)].children.emplace(uint8_t(c), child);
            nodes.emplace_back();
            node = child;
        }
    }
    if (nodes[size_t(node)].token < 0) nodes[size_t(node)].token = token;
    first_byte[uint8_t(key[0])] = true;
}

int32_t AddedTokens::Trie::longest(std::string_view text, size_t pos, size_t& length) const {
    int32_t node = 0, best = -1;
    for (size_t i = pos; i < text.size(); ++i) {
        const auto& children = nodes[size_t(node)].children;
        const auto it = children.find(uint8_t(text[i]));
        if (it == children.end()) break;
        node = it->second;
        if (nodes[size_t(node)].token >= 0) best = nodes[size_t(node)].token, length = i + 1 - pos;
    }
    return best;
}

AddedTokens::AddedTokens(const nlohmann::json& added_tokens) {
    if (added_tokens.is_null()) return;
    if (!added_tokens.is_array()) fail("added_tokens: expected an array");
    for (const auto& t : added_tokens) {
        AddedToken token;
        with_context(cat("added_tokens[", tokens_.size(), "]"), [&] {
            const int64_t id = json_int(t, "id");
            if (id < 0 || id > INT32_MAX) fail("'id': out of range");
            token.id = int32_t(id);
            token.content = json_string(t, "content");
            token.special = json_bool(t, "special", false);
            token.lstrip = json_bool(t, "lstrip", false);
            token.rstrip = json_bool(t, "rstrip", false);
            token.single_word = json_bool(t, "single_word", false);
            token.normalized = json_bool(t, "normalized", !token.special);
            utf8::check_utf8(token.content, "'content'");
        });
        const auto index = int32_t(tokens_.size());
        by_id_[token.id] = size_t(index);
        by_content_[token.content] = size_t(index);
        if (!token.content.empty())
            (token.normalized ? normalized_ : raw_).insert(token.content, index);
        tokens_.push_back(std::move(token));
    }
}

const AddedToken* AddedTokens::by_id(int32_t id) const {
    const auto it = by_id_.find(id);
    return it == by_id_.end() ? nullptr : &tokens_[it->second];
}

const AddedToken* AddedTokens::by_content(std::string_view content) const {
    const auto it = by_content_.find(std::string(content));
    return it == by_content_.end() ? nullptr : &tokens_[it->second];
}

void AddedTokens::split(std::string_view text, bool normalized,
                        std::vector<TextSegment>& out) const {
    const Trie& trie = normalized ? normalized_ : raw_;
    size_t start_offset = 0;
    size_t pos = 0;
    while (pos < text.size()) {
        if (!trie.first_byte[uint8_t(text[pos])]) {
            ++pos;
            continue;
        }
        size_t length = 0;
        const int32_t index = trie.longest(text, pos, length);
        if (index < 0) {
            ++pos;
            continue;
        }
        const AddedToken& token = tokens_[size_t(index)];
        size_t start = pos, stop = pos + length;
        if (token.single_word) {
            size_t before = 0;
            const bool start_ok =
                start == 0 || !is_word_char(code_point_before(text, start, before));
            size_t after = stop;
            const bool stop_ok =
                stop == text.size() || !is_word_char(utf8::next_code_point(text, after));
            if (!start_ok || !stop_ok) {
                pos = stop;  // Aho-Corasick resumes after the rejected match
                continue;
            }
        }
        if (token.lstrip) {
            size_t s = start;
            while (s > start_offset) {
                size_t cp_start = 0;
                if (!is_white_space(code_point_before(text, s, cp_start))) break;
                s = cp_start;
            }
            start = s;
        }
        const size_t match_end = stop;
        if (token.rstrip) {
            while (stop < text.size()) {
                size_t i = stop;
                if (!is_white_space(utf8::next_code_point(text, i))) break;
                stop = i;
            }
        }
        if (start_offset < start) out.push_back({start_offset, start, -1});
        out.push_back({start, stop, token.id});
        start_offset = stop;
        pos = std::max(match_end, stop);
    }
    if (start_offset < text.size()) out.push_back({start_offset, text.size(), -1});
}

}  // namespace tandem

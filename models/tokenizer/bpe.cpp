// BPE merging as HF `tokenizers` (models/bpe/word.rs): the pair with the lowest rank is merged
// first, the leftmost among equals. Short words use a linear scan; long ones a heap.
#include "models/tokenizer/bpe.h"

#include <cstdio>
#include <queue>

#include "kernels/error.h"
#include "models/tokenizer/byte_level.h"
#include "models/tokenizer/json_util.h"
#include "models/tokenizer/utf8.h"

namespace tandem {

namespace {

constexpr size_t kCacheMaxWordBytes = 256;
constexpr size_t kCacheMaxEntries = 1 << 18;
constexpr size_t kLinearMaxSymbols = 48;

uint64_t pair_key(int32_t left, int32_t right) {
    return (uint64_t(uint32_t(left)) << 32) | uint32_t(right);
}

std::string optional_string(const nlohmann::json& model, const char* key) {
    const auto it = model.find(key);
    if (it == model.end() || it->is_null()) return "";
    if (!it->is_string()) fail("model: '", key, "': expected a string");
    return it->get<std::string>();
}

}  // namespace

Bpe::Bpe(const nlohmann::json& model, bool byte_level)
    : byte_level_(byte_level),
      ignore_merges_(json_bool(model, "ignore_merges", false)),
      byte_fallback_(json_bool(model, "byte_fallback", false)),
      fuse_unk_(json_bool(model, "fuse_unk", false)),
      prefix_(optional_string(model, "continuing_subword_prefix")),
      suffix_(optional_string(model, "end_of_word_suffix")) {
    const auto& vocab = json_field(model, "vocab");
    if (!vocab.is_object()) fail("model: 'vocab': expected an object");
    vocab_.reserve(vocab.size());
    for (const auto& [token, id_json] : vocab.items()) {
        if (!id_json.is_number_integer() || id_json.get<int64_t>() < 0 ||
            id_json.get<int64_t>() > INT32_MAX)
            fail("model: vocab: '", token, "': expected a non-negative id");
        const auto id = int32_t(id_json.get<int64_t>());
        vocab_.emplace(token, id);
        if (size_t(id) >= tokens_.size()) tokens_.resize(size_t(id) + 1);
        tokens_[size_t(id)] = token;
    }
    std::fill(std::begin(byte_ids_), std::end(byte_ids_), -1);
    std::fill(std::begin(fallback_ids_), std::end(fallback_ids_), -1);
    if (byte_level_) {
        byte_vocab_.reserve(vocab_.size());
        for (const auto& [token, id] : vocab_)
            if (auto bytes = byte_level::to_bytes(token)) {
                if (bytes->size() == 1) byte_ids_[uint8_t((*bytes)[0])] = id;
                byte_vocab_.emplace(std::move(*bytes), id);
            }
    }
    if (byte_fallback_)
        for (int b = 0; b < 256; ++b) {
            char name[8];
            std::snprintf(name, sizeof name, "<0x%02X>", b);
            if (auto it = vocab_.find(std::string_view(name)); it != vocab_.end())
                fallback_ids_[b] = it->second;
        }
    const std::string unk = optional_string(model, "unk_token");
    if (!unk.empty()) {
        const auto it = vocab_.find(unk);
        if (it == vocab_.end()) fail("model: unk_token '", unk, "' is not in the vocabulary");
        unk_id_ = it->second;
    }

    const auto& merges = json_array(model, "merges");
    merges_.reserve(merges.size());
    std::string left, right;
    for (size_t rank = 0; rank < merges.size(); ++rank) {
        const auto& m = merges[rank];
        if (m.is_string()) {
            const auto& s = m.get_ref<const std::string&>();
            const size_t space = s.find(' ');
            if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos)
                fail("model: merges[", rank, "]: expected \"left right\", found '", s, "'");
            left.assign(s, 0, space);
            right.assign(s, space + 1);
        } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
            left = m[0].get<std::string>();
            right = m[1].get<std::string>();
        } else {
            fail("model: merges[", rank, "]: expected a string or a pair of strings");
        }
        const auto l = vocab_.find(left), r = vocab_.find(right);
        const std::string joined = left + right.substr(std::min(prefix_.size(), right.size()));
        const auto j = vocab_.find(joined);
        if (l == vocab_.end() || r == vocab_.end() || j == vocab_.end())
            fail("model: merges[", rank, "]: '", left, " ", right,
                 "' uses a token not in the vocabulary");
        merges_.emplace(pair_key(l->second, r->second), Merge{int32_t(rank), j->second});
    }
}

Bpe::~Bpe() = default;

std::optional<int32_t> Bpe::token_to_id(std::string_view token) const {
    const auto it = vocab_.find(token);
    if (it == vocab_.end()) return std::nullopt;
    return it->second;
}

const std::string* Bpe::id_to_token(int32_t id) const {
    if (id < 0 || size_t(id) >= tokens_.size()) return nullptr;
    return &tokens_[size_t(id)];
}

const Bpe::Merge* Bpe::find_merge(int32_t left, int32_t right) const {
    const auto it = merges_.find(pair_key(left, right));
    return it == merges_.end() ? nullptr : &it->second;
}

void Bpe::initial_symbols(std::string_view word, std::vector<int32_t>& symbols) const {
    symbols.clear();
    if (byte_level_ && prefix_.empty() && suffix_.empty()) {
        for (const char c : word) {
            const int32_t id = byte_ids_[uint8_t(c)];
            if (id >= 0)
                symbols.push_back(id);
            else if (unk_id_ && !(fuse_unk_ && !symbols.empty() && symbols.back() == *unk_id_))
                symbols.push_back(*unk_id_);
        }
        return;
    }
    const TokenMap& vocab = byte_level_ ? byte_vocab_ : vocab_;
    std::string piece;
    bool pending_unk = false;
    size_t i = 0;
    while (i < word.size()) {
        const bool first = i == 0;
        const size_t n = byte_level_ ? 1 : utf8::sequence_length(uint8_t(word[i]));
        const bool last = i + n >= word.size();
        piece.assign(first ? "" : prefix_);
        piece.append(word.substr(i, n));
        if (last) piece += suffix_;
        const auto it = vocab.find(piece);
        if (it != vocab.end()) {
            if (pending_unk) symbols.push_back(*unk_id_), pending_unk = false;
            symbols.push_back(it->second);
        } else {
            bool done = false;
            if (byte_fallback_) {
                bool all = true;
                for (size_t k = i; k < i + n && k < word.size(); ++k)
                    all = all && fallback_ids_[uint8_t(word[k])] >= 0;
                if (all) {
                    for (size_t k = i; k < i + n && k < word.size(); ++k)
                        symbols.push_back(fallback_ids_[uint8_t(word[k])]);
                    done = true;
                }
            }
            if (!done && unk_id_) {
                if (pending_unk && !fuse_unk_) symbols.push_back(*unk_id_);
                pending_unk = true;
            }
        }
        i += n;
    }
    if (pending_unk) symbols.push_back(*unk_id_);
}

void Bpe::merge_word(std::string_view word, std::vector<int32_t>& out) const {
    thread_local std::vector<int32_t> symbols;
    initial_symbols(word, symbols);
    if (symbols.size() <= kLinearMaxSymbols) {
        while (symbols.size() > 1) {
            int32_t best_rank = INT32_MAX, best_id = -1;
            size_t best_pos = 0;
            for (size_t k = 0; k + 1 < symbols.size(); ++k)
                if (const Merge* m = find_merge(symbols[k], symbols[k + 1]);
                    m && m->rank < best_rank) {
                    best_rank = m->rank, best_id = m->new_id, best_pos = k;
                }
            if (best_id < 0) break;
            symbols[best_pos] = best_id;
            symbols.erase(symbols.begin() + std::ptrdiff_t(best_pos) + 1);
        }
        out.insert(out.end(), symbols.begin(), symbols.end());
        return;
    }
    // Long words: a doubly linked list of symbols and a heap of candidate merges.
    const size_t n = symbols.size();
    std::vector<int32_t> prev(n), next(n);
    std::vector<bool> alive(n, true);
    for (size_t k = 0; k < n; ++k)
        prev[k] = int32_t(k) - 1, next[k] = k + 1 < n ? int32_t(k + 1) : -1;
    struct Candidate {
        int32_t rank, pos, new_id;
        bool operator>(const Candidate& o) const {
            return rank != o.rank ? rank > o.rank : pos > o.pos;
        }
    };
    std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> heap;
    auto push = [&](int32_t pos) {
        if (pos < 0 || next[size_t(pos)] < 0) return;
        if (const Merge* m = find_merge(symbols[size_t(pos)], symbols[size_t(next[size_t(pos)])]))
            heap.push({m->rank, pos, m->new_id});
    };
    for (size_t k = 0; k + 1 < n; ++k)
        push(int32_t(k));
    while (!heap.empty()) {
        const Candidate c = heap.top();
        heap.pop();
        const auto pos = size_t(c.pos);
        if (!alive[pos] || next[pos] < 0) continue;
        const auto right = size_t(next[pos]);
        const Merge* m = find_merge(symbols[pos], symbols[right]);
        if (!m || m->new_id != c.new_id) continue;
        symbols[pos] = c.new_id;
        alive[right] = false;
        next[pos] = next[right];
        if (next[pos] >= 0) prev[size_t(next[pos])] = int32_t(pos);
        push(prev[pos]);
        push(int32_t(pos));
    }
    for (int32_t k = 0; k >= 0; k = next[size_t(k)])
        out.push_back(symbols[size_t(k)]);
}

void Bpe::tokenize(std::string_view word, std::vector<int32_t>& out) const {
    if (word.empty()) return;
    if (ignore_merges_) {
        const TokenMap& vocab = byte_level_ ? byte_vocab_ : vocab_;
        if (const auto it = vocab.find(word); it != vocab.end()) {
            out.push_back(it->second);
            return;
        }
    }
    const bool cacheable = word.size() <= kCacheMaxWordBytes;
    if (cacheable) {
        std::lock_guard lock(cache_mutex_);
        if (const auto it = cache_.find(word); it != cache_.end()) {
            out.insert(out.end(), it->second.begin(), it->second.end());
            return;
        }
    }
    const size_t begin = out.size();
    merge_word(word, out);
    if (cacheable) {
        std::lock_guard lock(cache_mutex_);
        if (cache_.size() >= kCacheMaxEntries) cache_.clear();
        cache_.emplace(std::string(word),
                       std::vector<int32_t>(out.begin() + std::ptrdiff_t(begin), out.end()));
    }
}

}  // namespace tandem

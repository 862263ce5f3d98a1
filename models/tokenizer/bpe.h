// Bpe: the BPE model of tokenizer.json ("type": "BPE"): a vocabulary, ranked merges, optional
// byte fallback (<0xNN> tokens), unk token with fuse_unk, ignore_merges, continuing-subword
// prefix and end-of-word suffix.
//
// Byte-level files (a ByteLevel pre-tokenizer) are run on raw bytes: the vocabulary and merges
// are converted once from GPT-2's byte spelling, so a word's initial symbols are its bytes. The
// result of each word is cached (as HF does), which is what makes encoding fast: most words of
// real text repeat. The cache is guarded by a mutex; encode() may be called from many threads.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

namespace tandem {

struct StringHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using TokenMap = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

class Bpe {
  public:
    // model: the "model" object of tokenizer.json. byte_level: run on bytes (see above).
    Bpe(const nlohmann::json& model, bool byte_level);
    ~Bpe();

    // Appends the ids of one pre-tokenized word (valid UTF-8, non-empty) to out.
    void tokenize(std::string_view word, std::vector<int32_t>& out) const;

    // The vocabulary as the file spells it.
    std::optional<int32_t> token_to_id(std::string_view token) const;
    const std::string* id_to_token(int32_t id) const;  // nullptr when out of range
    size_t vocab_size() const { return tokens_.size(); }

  private:
    struct Merge {
        int32_t rank;
        int32_t new_id;
    };
    void merge_word(std::string_view word, std::vector<int32_t>& out) const;
    void initial_symbols(std::string_view word, std::vector<int32_t>& symbols) const;
    const Merge* find_merge(int32_t left, int32_t right) const;

    bool byte_level_;
    bool ignore_merges_;
    bool byte_fallback_;
    bool fuse_unk_;
    std::optional<int32_t> unk_id_;
    std::string prefix_, suffix_;  // continuing_subword_prefix, end_of_word_suffix

    TokenMap vocab_;                   // as spelled in the file
    TokenMap byte_vocab_;              // byte_level_: raw bytes -> id
    std::vector<std::string> tokens_;  // id -> token as spelled in the file ("" for holes)
    int32_t byte_ids_[256];            // byte_level_: the id of each single byte, -1 if none
    int32_t fallback_ids_[256];        // byte_fallback_: the id of <0xNN>, -1 if none
    std::unordered_map<uint64_t, Merge> merges_;

    mutable std::mutex cache_mutex_;
    mutable std::unordered_map<std::string, std::vector<int32_t>, StringHash, std::equal_to<>>
        cache_;
};

}  // namespace tandem

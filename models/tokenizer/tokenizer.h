// Tokenizer: a Hugging Face tokenizer.json (plus tokenizer_config.json when present) that
// encodes and decodes exactly as HF `tokenizers` does.
//
//   Tokenizer tok = Tokenizer::load("path/to/model");          // the folder
//   std::vector<int32_t> ids = tok.encode("Hello", {.add_special_tokens = true});
//   std::string text = tok.decode(ids);
//
// Pipeline (as tokenizers' encode): added tokens with normalized=false are cut out of the raw
// text; each remaining piece is normalized, then cut at added tokens with normalized=true;
// the rest is pre-tokenized into words, each word goes through the BPE model; finally the
// post-processor's special tokens are added.
//
// BOS/EOS: when tokenizer_config.json has `add_bos_token` or `add_eos_token`, those flags with
// its `bos_token`/`eos_token` decide the special tokens added around a sequence, replacing the
// post-processor's (what transformers' Llama tokenizers did: DeepSeek-V3 gets its BOS this way);
// otherwise the post-processor of tokenizer.json decides.
//
// Input must be valid UTF-8; encode() throws tandem::Error with the byte offset otherwise (HF
// cannot take such input either). Every loading error names the file and the component.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "models/tokenizer/added_tokens.h"

namespace tandem {

class Bpe;
class TokenDecoder;
class Normalizer;
class PreTokenizer;

struct EncodeOptions {
    bool add_special_tokens = true;  // BOS/EOS and the post-processor's template
};

struct DecodeOptions {
    bool skip_special_tokens = false;
};

class Tokenizer {
  public:
    // dir holds tokenizer.json and optionally tokenizer_config.json.
    static Tokenizer load(const std::string& dir);
    // From already-parsed files; config may be null. origin names them in errors.
    static Tokenizer from_json(const nlohmann::json& tokenizer, const nlohmann::json& config,
                               const std::string& origin);

    Tokenizer(Tokenizer&&) noexcept;
    Tokenizer& operator=(Tokenizer&&) noexcept;
    ~Tokenizer();

    std::vector<int32_t> encode(std::string_view text, EncodeOptions options = {}) const;
    std::string decode(std::span<const int32_t> ids, DecodeOptions options = {}) const;

    std::optional<int32_t> token_to_id(std::string_view token) const;
    std::optional<std::string> id_to_token(int32_t id) const;
    size_t vocab_size() const;  // the model's vocabulary plus added tokens beyond it
    bool is_special(int32_t id) const;

    // From tokenizer_config.json ("" when absent).
    const std::string& chat_template() const { return chat_template_; }
    const std::string& bos_token() const { return bos_token_; }
    const std::string& eos_token() const { return eos_token_; }
    // Every special token named in tokenizer_config.json ("bos_token", "pad_token", ...), as
    // transformers passes them to chat templates.
    const std::vector<std::pair<std::string, std::string>>& named_special_tokens() const {
        return named_special_tokens_;
    }
    // The sections of tokenizer.json that say how token strings map to bytes ("normalizer",
    // "pre_tokenizer", "decoder"; a GGUF tokenizer's equivalents), as one JSON object: what a
    // library that reads vocabularies (xgrammar, for structured output) detects the encoding from.
    const std::string& pipeline_json() const { return pipeline_json_; }

  private:
    Tokenizer();
    void encode_piece(std::string_view text, bool at_start, std::vector<int32_t>& ids) const;

    std::unique_ptr<Normalizer> normalizer_;
    std::unique_ptr<PreTokenizer> pre_tokenizer_;
    std::unique_ptr<Bpe> model_;
    std::unique_ptr<TokenDecoder> decoder_;
    std::unique_ptr<AddedTokens> added_;
    std::vector<int32_t> prefix_ids_, suffix_ids_;  // added around a sequence
    std::string chat_template_, bos_token_, eos_token_, pipeline_json_;
    std::vector<std::pair<std::string, std::string>> named_special_tokens_;
};

// Streams text from ids one at a time: a piece is returned only when it ends at a complete
// UTF-8 character, and the pieces of push() and finish() concatenate to decode(all ids).
// Works like HF's DecodeStream: decode a short window of ids and emit what the newest id adds.
class IncrementalDecoder {
  public:
    explicit IncrementalDecoder(const Tokenizer& tokenizer, DecodeOptions options = {});
    std::string push(int32_t id);  // "" when nothing is complete yet
    std::string finish();          // whatever is left, incl. U+FFFD for an unfinished character

  private:
    const Tokenizer* tokenizer_;
    DecodeOptions options_;
    std::vector<int32_t> ids_;
    std::string prefix_;  // decode of ids_[0, prefix_index_)
    size_t prefix_index_ = 0;
};

}  // namespace tandem

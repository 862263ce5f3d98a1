// Decoders of tokenizer.json: ByteLevel, Metaspace, Replace, ByteFallback, Fuse, Strip,
// Sequence. As in HF `tokenizers`, a decoder maps the list of token strings to a new list
// (decode_chain) and the text is their concatenation.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace tandem {

class TokenDecoder {
  public:
    virtual ~TokenDecoder() = default;
    virtual void decode_chain(std::vector<std::string>& tokens) const = 0;
};

// nullptr for a null decoder. Throws tandem::Error naming an unknown "type".
std::unique_ptr<TokenDecoder> make_decoder(const nlohmann::json& json);

}  // namespace tandem

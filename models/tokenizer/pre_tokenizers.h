// Pre-tokenizers of tokenizer.json: Split (regex or string, five behaviours, invert), ByteLevel,
// Digits, Metaspace, Sequence. A pre-tokenizer cuts each piece of normalized text into smaller
// pieces (the "words" BPE sees); offsets are not tracked.
//
// ByteLevel does not remap bytes here: Tandem's BPE runs on raw bytes when the pipeline has a
// ByteLevel pre-tokenizer (its vocabulary is converted at load time), which is equivalent and
// cheaper. For that to hold ByteLevel must come last in a Sequence; anything after it is
// rejected as unsupported.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace tandem {

class PreTokenizer {
  public:
    virtual ~PreTokenizer() = default;
    // Replaces pieces by their sub-pieces. `at_start`: pieces[0] begins the input text (for
    // Metaspace's prepend_scheme "first").
    virtual void pre_tokenize(std::vector<std::string>& pieces, bool at_start) const = 0;
    // True when the pipeline ends with ByteLevel (BPE then works on bytes).
    virtual bool byte_level() const { return false; }
};

// nullptr for a null pre-tokenizer. Throws tandem::Error naming an unknown "type".
std::unique_ptr<PreTokenizer> make_pre_tokenizer(const nlohmann::json& json);

}  // namespace tandem

// The tokenizer of a model, wherever it is stored: tokenizer.json (+ tokenizer_config.json) in a
// Hugging Face directory, or the tokenizer.ggml.* metadata of a GGUF file
// (models/gguf_tokenizer.h).
#pragma once

#include <string>

#include "models/tokenizer/tokenizer.h"

namespace tandem {

// `model_path`: a model directory, or a .gguf file (any split of a split model). Throws
// tandem::Error naming the path when it holds no tokenizer.
Tokenizer load_tokenizer(const std::string& model_path);

}  // namespace tandem

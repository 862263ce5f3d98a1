// A Tokenizer from the tokenizer.ggml.* metadata of a GGUF file, built as the tokenizer.json and
// tokenizer_config.json that Hugging Face would hold for it, so that one implementation
// (models/tokenizer/) encodes both.
//
// tokenizer.ggml.model:
//   gpt2  byte-level BPE: tokens, merges; the pre-tokenizer regex is not stored in the file but
//         named by tokenizer.ggml.pre (qwen2, llama-bpe/llama3, deepseek-v3, gpt-2/default),
//         with the regexes of the corresponding Hugging Face tokenizers.
//   llama SentencePiece BPE with byte fallback: tokens and scores; the merges are derived from
//         the scores as transformers' LlamaConverter does.
// Token types: control (3) tokens become special added tokens, user-defined (4) ones plain
// added tokens. BOS/EOS from the special token ids and add_bos_token/add_eos_token (defaults as
// llama.cpp: BOS for llama and llama3 vocabularies), the chat template from
// tokenizer.chat_template.
#pragma once

#include <utility>

#include <nlohmann/json.hpp>

#include "models/gguf.h"
#include "models/tokenizer/tokenizer.h"

namespace tandem {

// {tokenizer.json, tokenizer_config.json} equivalents of the file's metadata.
std::pair<nlohmann::json, nlohmann::json> gguf_tokenizer_json(const GgufModelFiles& files);

Tokenizer load_gguf_tokenizer(const GgufModelFiles& files);

}  // namespace tandem

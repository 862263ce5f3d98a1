// GGUF models: the files llama.cpp writes (convert_hf_to_gguf.py, llama-quantize, gguf-split),
// loaded into the same Decoder as Hugging Face checkpoints.
//
// The GGUF metadata ({arch}.* keys) is translated into the config.json an equivalent Hugging
// Face checkpoint would have, and the GGUF tensors (token_embd, blk.N.attn_q, the 3-D
// blk.N.ffn_{gate,up,down}_exps, ...) are presented under the Hugging Face names, so each
// architecture's own factory reads and validates them. Nothing is dequantized: every tensor keeps
// its stored type and is read in place from the mapped file (the CPU kernels take F32, F16, BF16,
// Q8_0, Q5_0, Q4_0, Q4_K, Q5_K and Q6_K weights; other types fail naming the tensor). The only
// copies are the q and k projections of the llama architecture, whose rows llama.cpp's converter
// permuted for its interleaved RoPE and which are put back in Hugging Face order.
//
// Architectures: llama (with experts: Mixtral), qwen2, qwen2moe, qwen3moe, olmoe, deepseek2
// (DeepSeek-V2 and V3, with kv_b whole as older converters wrote it or split into k_b and v_b as
// newer ones do; both are read in place).
#pragma once

#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "models/gguf.h"
#include "models/model.h"

namespace tandem {

// Loads `path` (a .gguf file, or any split of a split model). Throws tandem::Error naming the
// file, key or tensor at fault.
std::unique_ptr<Model> load_gguf_model(const std::string& path);

// The config.json equivalent of a GGUF model's metadata (exposed for tests and tools).
nlohmann::json gguf_model_config(const GgufModelFiles& files);

// The GGUF architecture names load_gguf_model() accepts.
std::vector<std::string> supported_gguf_architectures();

}  // namespace tandem

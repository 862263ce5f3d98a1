// The reference.safetensors of a golden fixture (tests/data/golden/README.md): the prompt and
// the logits and greedy ids that transformers computed for it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace tandem {

struct Reference {
    std::vector<int32_t> prompt;
    std::vector<float> logits;  // [n_prompt, vocab], float32 computation
    std::vector<int32_t> greedy;
    std::vector<float> logits_bf16;  // bf16 checkpoints: native bfloat16 computation; else empty
    // gpt-oss's mxfp4 checkpoint: transformers' dequantized experts of layer 0, [n_experts,
    // hidden, 2 * ffn] (gate and up interleaved) and [n_experts, ffn, hidden]; else empty.
    std::vector<float> experts0_gate_up, experts0_down;
};

Reference read_reference(const std::string& path);

}  // namespace tandem

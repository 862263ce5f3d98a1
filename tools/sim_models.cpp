#include "tools/sim_models.h"

#include "kernels/error.h"

namespace tandem::sim {
namespace {

// Attention projections: q and o of n_heads*head_dim, k and v of n_kv_heads*head_dim; plus the
// router. MLA (DeepSeek) is approximated by its projection sizes.
int64_t attention(int64_t hidden, int64_t q_dim, int64_t kv_dim, int64_t n_experts) {
    return 2 * hidden * q_dim + 2 * hidden * kv_dim + hidden * n_experts;
}

}  // namespace

std::vector<std::string> model_preset_names() {
    return {"olmoe-1b-7b",   "deepseek-v2-lite", "gpt-oss-20b", "gpt-oss-120b",
            "qwen3-30b-a3b", "mixtral-8x7b",     "glm-4.5-air", "tandem-demo-moe"};
}

ModelShape model_preset(const std::string& name, double bits) {
    ModelShape s;
    if (name == "olmoe-1b-7b") {
        s = {.n_moe_layers = 16,
             .n_experts = 64,
             .n_experts_active = 8,
             .hidden_dim = 2048,
             .expert_ffn_dim = 1024,
             .dense_params_per_layer = attention(2048, 2048, 2048, 64),
             .head_params = 50304LL * 2048};
    } else if (name == "deepseek-v2-lite") {
        // q 16 heads x 192, kv_a 2048 -> 576, kv_b 512 -> 16 x 256, o 16 x 128 -> 2048.
        s = {.n_moe_layers = 26,
             .n_experts = 64,
             .n_experts_active = 6,
             .n_shared_experts = 2,
             .hidden_dim = 2048,
             .expert_ffn_dim = 1408,
             .shared_ffn_dim = 1408,
             .dense_params_per_layer =
                 2048LL * 3072 + 2048 * 576 + 512 * 4096 + 2048 * 2048 + 2048 * 64,
             .head_params = 102400LL * 2048};
    } else if (name == "gpt-oss-20b") {
        // openai/gpt-oss-20b's config.json: 24 layers of 32 experts, 64 heads x 64 on 8 KV heads.
        s = {.n_moe_layers = 24,
             .n_experts = 32,
             .n_experts_active = 4,
             .hidden_dim = 2880,
             .expert_ffn_dim = 2880,
             .dense_params_per_layer = attention(2880, 4096, 512, 32),
             .head_params = 201088LL * 2880};
    } else if (name == "gpt-oss-120b") {
        s = {.n_moe_layers = 36,
             .n_experts = 128,
             .n_experts_active = 4,
             .hidden_dim = 2880,
             .expert_ffn_dim = 2880,
             .dense_params_per_layer = attention(2880, 4096, 512, 128),
             .head_params = 201088LL * 2880};
    } else if (name == "qwen3-30b-a3b") {
        s = {.n_moe_layers = 48,
             .n_experts = 128,
             .n_experts_active = 8,
             .hidden_dim = 2048,
             .expert_ffn_dim = 768,
             .dense_params_per_layer = attention(2048, 4096, 512, 128),
             .head_params = 151936LL * 2048};
    } else if (name == "mixtral-8x7b") {
        s = {.n_moe_layers = 32,
             .n_experts = 8,
             .n_experts_active = 2,
             .hidden_dim = 4096,
             .expert_ffn_dim = 14336,
             .dense_params_per_layer = attention(4096, 4096, 1024, 8),
             .head_params = 32000LL * 4096};
    } else if (name == "glm-4.5-air") {
        // zai-org/GLM-4.5-Air: 46 layers, the first dense (its 3 x 4096 x 10944 spread over the
        // 45 MoE layers here), 96 heads x 128 on 8 KV heads, 1 shared expert, untied lm_head.
        s = {.n_moe_layers = 45,
             .n_experts = 128,
             .n_experts_active = 8,
             .n_shared_experts = 1,
             .hidden_dim = 4096,
             .expert_ffn_dim = 1408,
             .dense_params_per_layer = attention(4096, 12288, 1024, 128) + 3LL * 4096 * 10944 / 45,
             .head_params = 151552LL * 4096};
    } else if (name == "tandem-demo-moe") {
        // models/demo/tandem-demo-moe: 4 heads x 64, 2 kv heads, tied embeddings.
        s = {.n_moe_layers = 8,
             .n_experts = 32,
             .n_experts_active = 4,
             .hidden_dim = 256,
             .expert_ffn_dim = 96,
             .dense_params_per_layer = attention(256, 256, 128, 32),
             .head_params = 8192LL * 256};
    } else {
        fail("--model ", name,
             ": unknown preset; expected olmoe-1b-7b, deepseek-v2-lite, gpt-oss-20b, gpt-oss-120b, "
             "qwen3-30b-a3b, mixtral-8x7b, glm-4.5-air or tandem-demo-moe");
    }
    if (!(bits > 0.0 && bits <= 32.0)) fail("--bits: expected (0, 32], got ", bits);
    s.name = name;
    s.bits_per_weight = bits;
    return s;
}

}  // namespace tandem::sim

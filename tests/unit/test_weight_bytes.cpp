// Weights read per decoded token (bench/weight_bytes.h) against the CPU-only bytes per token of
// reference/models.md 3.3, computed there independently: (active parameters - token_embd) at
// 4.5 bits per weight, i.e. Q4_K.
#include <gtest/gtest.h>

#include "bench/weight_bytes.h"
#include "models/config.h"

namespace tandem {
namespace {

ModelConfig moe(int64_t vocab, int64_t hidden, int64_t layers, int64_t heads, int64_t kv_heads,
                int64_t head_dim, int64_t experts, int64_t top_k, int64_t expert_ffn) {
    ModelConfig c;
    c.vocab_size = vocab;
    c.hidden_dim = hidden;
    c.n_layers = layers;
    c.n_heads = heads;
    c.n_kv_heads = kv_heads;
    c.head_dim = head_dim;
    c.n_experts = experts;
    c.n_experts_active = top_k;
    c.expert_ffn_dim = expert_ffn;
    c.layer_is_moe.assign(size_t(layers), true);
    return c;
}

TEST(WeightBytes, MatchTheReferenceTable) {
    const struct {
        const char* name;
        ModelConfig config;
        double gb_per_token;  // reference/models.md 3.3, "CPU-only B_tok @4.5 bpw"
    } cases[] = {
        {"olmoe-1b-7b", moe(50304, 2048, 16, 16, 16, 128, 64, 8, 1024), 0.66},
        {"qwen3-30b-a3b", moe(151936, 2048, 48, 32, 4, 128, 128, 8, 768), 1.71},
        {"mixtral-8x7b", moe(32000, 4096, 32, 32, 8, 128, 8, 2, 14336), 7.17},
    };
    for (const auto& c : cases) {
        const bench::StepBytes b = bench::decode_step_bytes(c.config, DType::Q4_K, DType::Q4_K);
        EXPECT_NEAR(b.total() / 1e9 / c.gb_per_token, 1.0, 0.03) << c.name << ": " << b.total();
        EXPECT_GT(b.routed_experts, b.attention) << c.name;
    }
}

// DeepSeek-V2-Lite: MLA projections (q 16 x 192, kv_a 576, kv_b 16 x 256 from 512, o), the dense
// first layer, 2 shared experts; reference/models.md 3.3 says 1.38 GB at 4.5 bits per weight.
TEST(WeightBytes, CountsLatentAttentionDenseLayersAndSharedExperts) {
    ModelConfig c = moe(102400, 2048, 27, 16, 16, 64, 64, 6, 1408);
    c.mla = MlaConfig{
        .kv_lora_rank = 512, .qk_nope_head_dim = 128, .qk_rope_head_dim = 64, .v_head_dim = 128};
    c.ffn_dim = 10944;
    c.shared_expert_ffn_dim = 2816;
    c.layer_is_moe[0] = false;
    const bench::StepBytes b = bench::decode_step_bytes(c, DType::Q4_K, DType::Q4_K);
    EXPECT_NEAR(b.total() / 1e9 / 1.38, 1.0, 0.03) << b.total();
    EXPECT_NEAR(b.attention / 27 / (4.5 / 8), 2048.0 * 3072 + 2048 * 576 + 512 * 4096 + 2048 * 2048,
                1.0);
    EXPECT_NEAR(b.dense_ffn / (4.5 / 8), 3.0 * 2048 * 10944, 1.0);
    EXPECT_NEAR(b.shared_experts / 26 / (4.5 / 8), 3.0 * 2048 * 2816, 1.0);
    EXPECT_NEAR(bench::parameter_count(c) / 15.7e9, 1.0, 0.02);
}

TEST(WeightBytes, BatchesTouchMoreExpertsUpToAll) {
    const ModelConfig c = moe(50304, 2048, 16, 16, 16, 128, 64, 8, 1024);
    const double one = bench::decode_step_bytes(c, DType::Q8_0, DType::F32, 1).routed_experts;
    const double four = bench::decode_step_bytes(c, DType::Q8_0, DType::F32, 4).routed_experts;
    const double many = bench::decode_step_bytes(c, DType::Q8_0, DType::F32, 4096).routed_experts;
    EXPECT_GT(four, one);
    EXPECT_LT(four, 4 * one);                     // some experts are shared between the sequences
    EXPECT_NEAR(many, one * 64 / 8, one * 1e-6);  // every expert once
}

}  // namespace
}  // namespace tandem

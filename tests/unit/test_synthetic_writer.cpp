// The synthetic model writers of tandem-bench (tools/synthetic_writer.h): every architecture, as
// safetensors and as GGUF in float and quantized types, loads and generates through the Engine;
// the same spec and seed give the same bytes; the presets have the real models' sizes; a cut of
// DeepSeek-V2-Lite's preset has its shapes once loaded.
#include <tandem/engine.h>

#include <fstream>
#include <iterator>

#include "kernels/error.h"
#include "models/config.h"
#include "models/model.h"
#include "tests/test_util.h"
#include "tools/synthetic_model.h"
#include "tools/synthetic_writer.h"

namespace tandem {
namespace {

// Small, but with rows of 256 so that every K-quant applies without fallback (but to DeepSeek's
// attn_k_b, whose rows are qk_nope wide, as in the real model).
SyntheticModelSpec tiny(SyntheticArch arch, uint64_t seed) {
    SyntheticModelSpec s;
    s.name = "tiny";
    s.arch = arch;
    s.vocab_size = 300;  // > the 259 byte and special tokens of the placeholder vocabulary
    s.hidden_dim = 256;
    s.n_layers = 2;
    s.n_heads = 2;
    s.n_kv_heads = arch == SyntheticArch::Olmoe ? 2 : 1;
    s.head_dim = 128;
    s.n_experts = 4;
    s.n_experts_active = 2;
    s.expert_ffn_dim = 256;
    s.shared_expert_ffn_dim = arch == SyntheticArch::Qwen2Moe ? 512 : 0;
    s.max_position_embeddings = 64;
    s.seed = seed;
    if (arch == SyntheticArch::DeepseekV2) {
        s.n_kv_heads = s.n_heads;
        s.mla = {.kv_lora_rank = 256,
                 .qk_nope_head_dim = 128,
                 .qk_rope_head_dim = 64,
                 .v_head_dim = 128};
        s.shared_expert_ffn_dim = 2 * s.expert_ffn_dim;
        s.n_dense_layers = 1;
        s.dense_ffn_dim = 512;
        s.yarn_factor = 4;
        s.yarn_original_context = 16;
        s.yarn_mscale = 0.707;
    }
    if (arch == SyntheticArch::Glm4Moe) {
        s.shared_expert_ffn_dim = s.expert_ffn_dim;
        s.n_dense_layers = 1;
        s.dense_ffn_dim = 512;
        s.partial_rotary_factor = 0.5;
    }
    if (arch == SyntheticArch::GptOss) {
        s.sliding_window = 8;
        s.norm_topk_prob = true;  // gpt-oss always renormalises (the GGUF loader refuses false)
        s.yarn_factor = 4;
        s.yarn_original_context = 16;
    }
    return s;
}

std::vector<int32_t> generate(const std::string& path) {
    Engine engine = Engine::open({.model_dir = path, .n_threads = 1});
    const RequestOutput out =
        engine.generate(Prompt::tokens({5, 17, 200, 3}),
                        {.temperature = 0.0f, .max_tokens = 6, .ignore_eos = true});
    EXPECT_EQ(out.error, "");
    return out.completions.at(0).token_ids;
}

std::string read_all(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), {}};
}

class SyntheticWriterTest : public ::testing::TestWithParam<SyntheticArch> {};

TEST_P(SyntheticWriterTest, SafetensorsAndGgufLoadAndGenerate) {
    TANDEM_SEEDED(seed);
    const SyntheticModelSpec spec = tiny(GetParam(), seed);
    test::TempDir dir;
    write_synthetic_safetensors(dir.str() + "/st", spec, DType::BF16);
    EXPECT_EQ(generate(dir.str() + "/st").size(), 6u);
    for (DType type : {DType::F16, DType::Q8_0, DType::Q4_K, DType::MXFP4}) {
        SCOPED_TRACE(std::string(dtype_name(type)));
        const std::string path = dir.str() + "/m-" + std::string(dtype_name(type)) + ".gguf";
        write_synthetic_gguf(path, spec, type);
        const std::vector<int32_t> ids = generate(path);
        ASSERT_EQ(ids.size(), 6u);
        for (int32_t id : ids)
            EXPECT_TRUE(id >= 0 && id < spec.vocab_size) << id;
    }
}

INSTANTIATE_TEST_SUITE_P(Archs, SyntheticWriterTest,
                         ::testing::Values(SyntheticArch::Qwen3Moe, SyntheticArch::Olmoe,
                                           SyntheticArch::Mixtral, SyntheticArch::Qwen2Moe,
                                           SyntheticArch::DeepseekV2, SyntheticArch::Glm4Moe,
                                           SyntheticArch::GptOss));

// tandem-synth's progress: once per layer, in order, then once before the file is written.
TEST(SyntheticWriter, ProgressComesOncePerLayerThenBeforeTheWrite) {
    test::TempDir dir;
    std::vector<std::pair<int64_t, int64_t>> calls;
    write_synthetic_qwen3_moe(
        dir.str(),
        {.vocab_size = 64,
         .hidden_dim = 32,
         .n_layers = 3,
         .n_heads = 2,
         .n_kv_heads = 1,
         .head_dim = 16,
         .n_experts = 4,
         .n_experts_active = 2,
         .expert_ffn_dim = 16},
        [&](int64_t layer, int64_t n_layers) { calls.emplace_back(layer, n_layers); });
    const std::vector<std::pair<int64_t, int64_t>> want = {{1, 3}, {2, 3}, {3, 3}, {4, 3}};
    EXPECT_EQ(calls, want);
}

TEST(SyntheticWriter, SameSeedSameBytesOtherSeedOtherBytes) {
    test::TempDir dir;
    SyntheticModelSpec spec = tiny(SyntheticArch::Olmoe, 7);
    write_synthetic_gguf(dir.str() + "/a.gguf", spec, DType::Q4_K);
    write_synthetic_gguf(dir.str() + "/b.gguf", spec, DType::Q4_K);
    spec.seed = 8;
    write_synthetic_gguf(dir.str() + "/c.gguf", spec, DType::Q4_K);
    const std::string a = read_all(dir.str() + "/a.gguf");
    EXPECT_EQ(a, read_all(dir.str() + "/b.gguf"));
    EXPECT_NE(a, read_all(dir.str() + "/c.gguf"));
}

TEST(SyntheticWriter, PresetsHaveTheRealModelsSizes) {
    // Total parameters of reference/models.md 3.2, within 2 %.
    const std::pair<const char*, double> expected[] = {
        {"mixtral-8x7b", 46.7e9}, {"qwen3-30b-a3b", 30.5e9},     {"qwen2-57b-a14b", 57.4e9},
        {"olmoe-1b-7b", 6.9e9},   {"qwen1.5-moe-a2.7b", 14.3e9}, {"deepseek-v2-lite", 15.7e9},
        {"glm-4.5-air", 106e9},   // zai-org/GLM-4.5-Air's model card: 106B total
        {"gpt-oss-20b", 20.9e9},  // OpenAI's gpt-oss model card: 20.9B and 116.8B total
        {"gpt-oss-120b", 116.8e9}};
    for (const auto& [name, params] : expected) {
        const double n = double(synthetic_parameter_count(synthetic_preset(name)));
        EXPECT_NEAR(n / params, 1.0, 0.02) << name << ": " << n;
    }
    try {
        synthetic_preset("llama-7b");
        FAIL() << "an unknown preset was accepted";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("olmoe-1b-7b"), std::string::npos) << e.what();
    }
}

// A preset as it writes its layers, cut to 2 (the dense one and a MoE one), 8 experts and a
// vocabulary of 1024 so that the Q4_K file stays near 120 MB, written to `dir`/cut.gguf.
std::string write_cut_preset(const std::string& name, const test::TempDir& dir) {
    SyntheticModelSpec spec = synthetic_preset(name);
    spec.n_layers = 2;
    spec.n_experts = 8;
    spec.vocab_size = 1024;
    const std::string path = dir.str() + "/cut.gguf";
    write_synthetic_gguf(path, spec, DType::Q4_K);
    return path;
}

// Loads with the preset's shapes and runs a prefill and decode steps.
void expect_generates(const std::string& path) {
    const std::vector<int32_t> ids = generate(path);
    ASSERT_EQ(ids.size(), 6u);
    for (int32_t id : ids)
        EXPECT_TRUE(id >= 0 && id < 1024) << id;
}

// DeepSeek-V2-Lite: MLA, YaRN, shared experts.
TEST(SyntheticWriter, DeepseekV2LitePresetCutLoadsAndSteps) {
    test::TempDir dir;
    const std::string path = write_cut_preset("deepseek-v2-lite", dir);
    const std::unique_ptr<Model> model = load_model(path);
    const ModelConfig& c = model->config();
    EXPECT_EQ(c.architecture, "DeepseekV2ForCausalLM");
    ASSERT_TRUE(c.mla.has_value());
    EXPECT_EQ(c.mla->q_lora_rank, 0);
    EXPECT_EQ(c.mla->kv_lora_rank, 512);
    EXPECT_EQ(c.mla->qk_nope_head_dim, 128);
    EXPECT_EQ(c.mla->qk_rope_head_dim, 64);
    EXPECT_EQ(c.mla->v_head_dim, 128);
    EXPECT_EQ(c.layer_is_moe, (std::vector<bool>{false, true}));
    EXPECT_EQ(c.ffn_dim, 10944);
    EXPECT_EQ(c.expert_ffn_dim, 1408);
    EXPECT_EQ(c.shared_expert_ffn_dim, 2816);
    EXPECT_EQ(c.n_experts_active, 6);
    EXPECT_EQ(c.rope.type, "yarn");
    EXPECT_EQ(c.rope.factor, 40.0);
    EXPECT_EQ(c.rope.original_max_position_embeddings, 4096);
    expect_generates(path);
}

// GLM-4.5-Air: partial rotary, q/k/v biases, shared expert, sigmoid routing with its bias.
TEST(SyntheticWriter, Glm45AirPresetCutLoadsAndSteps) {
    test::TempDir dir;
    const std::string path = write_cut_preset("glm-4.5-air", dir);
    const std::unique_ptr<Model> model = load_model(path);
    const ModelConfig& c = model->config();
    EXPECT_EQ(c.architecture, "Glm4MoeForCausalLM");
    EXPECT_EQ(c.layer_is_moe, (std::vector<bool>{false, true}));
    EXPECT_EQ(c.head_dim, 128);
    EXPECT_EQ(c.rope.partial_rotary_factor, 0.5);
    EXPECT_TRUE(c.qkv_bias);
    EXPECT_FALSE(c.o_bias);
    EXPECT_EQ(c.shared_expert_ffn_dim, 1408);
    EXPECT_EQ(c.router_scoring, RouterScoring::Sigmoid);
    EXPECT_TRUE(c.router_bias);
    EXPECT_TRUE(c.norm_topk_prob);
    expect_generates(path);
}

// gpt-oss-20b at its real widths, cut to 2 layers of 4 experts and a vocabulary of 1024, in
// MXFP4 (about 60 MB): sinks, biases, alternating windows, YaRN, experts read in place.
TEST(SyntheticWriter, GptOss20bPresetCutLoadsAndSteps) {
    test::TempDir dir;
    SyntheticModelSpec spec = synthetic_preset("gpt-oss-20b");
    spec.n_layers = 2;
    spec.n_experts = 4;
    spec.vocab_size = 1024;
    const std::string path = dir.str() + "/cut.gguf";
    write_synthetic_gguf(path, spec, DType::MXFP4);
    const std::unique_ptr<Model> model = load_model(path);
    const ModelConfig& c = model->config();
    EXPECT_EQ(c.architecture, "GptOssForCausalLM");
    EXPECT_EQ(c.layer_is_sliding, (std::vector<bool>{true, false}));
    EXPECT_EQ(c.sliding_window, 128);
    EXPECT_EQ(c.head_dim, 64);
    EXPECT_EQ(c.expert_ffn_dim, 2880);
    EXPECT_EQ(c.n_experts_active, 4);
    EXPECT_TRUE(c.attention_sinks && c.expert_bias && c.router_logit_bias && c.qkv_bias &&
                c.o_bias);
    EXPECT_EQ(c.swiglu_limit, 7.0);
    EXPECT_EQ(c.rope.type, "yarn");
    EXPECT_EQ(c.rope.factor, 32.0);
    EXPECT_FALSE(c.rope.truncate);
    expect_generates(path);
}

TEST(SyntheticWriter, SafetensorsRefusesQuantizedTypes) {
    test::TempDir dir;
    EXPECT_THROW(
        write_synthetic_safetensors(dir.str(), tiny(SyntheticArch::Qwen3Moe, 1), DType::Q8_0),
        Error);
}

}  // namespace
}  // namespace tandem

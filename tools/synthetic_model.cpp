#include "tools/synthetic_model.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <vector>

#include "kernels/error.h"
#include "models/safetensors.h"
#include "tools/split_mix64.h"

namespace tandem {

namespace {

struct TensorData {
    std::string name;
    std::vector<int64_t> shape;
    std::vector<std::byte> bytes;
};

// Uniform values with standard deviation `std` (uniform on [-a, a] has std a / sqrt(3)), or all
// equal to `constant` when std is 0 (norm weights).
TensorData make_tensor_data(std::string name, std::vector<int64_t> shape, DType dtype, float std,
                            float constant, SplitMix64& rng) {
    int64_t n = 1;
    for (int64_t d : shape)
        n *= d;
    TensorData t{std::move(name), std::move(shape),
                 std::vector<std::byte>(size_t(n) * size_t(dtype_block_bytes(dtype)))};
    const float amplitude = std * std::sqrt(3.0f);
    for (int64_t i = 0; i < n; ++i) {
        const float value = std > 0 ? amplitude * rng.symmetric() : constant;
        if (dtype == DType::F32) {
            reinterpret_cast<float*>(t.bytes.data())[i] = value;
        } else if (dtype == DType::BF16) {
            reinterpret_cast<uint16_t*>(t.bytes.data())[i] = f32_to_bf16(value);
        } else if (dtype == DType::F16) {
            reinterpret_cast<uint16_t*>(t.bytes.data())[i] = f32_to_f16(value);
        } else {
            fail("synthetic model: unsupported dtype ", dtype_name(dtype));
        }
    }
    return t;
}

void write_json(const std::filesystem::path& path, const nlohmann::json& json) {
    std::ofstream out(path);
    out << json.dump(2) << "\n";
    if (!out) fail(path.string(), ": write failed");
}

}  // namespace

SyntheticQwen3MoeSpec default_synthetic_spec() {
    return {};
}

int64_t write_synthetic_qwen3_moe(const std::string& dir, const SyntheticQwen3MoeSpec& s,
                                  const SynthProgress& on_progress) {
    namespace fs = std::filesystem;
    fs::create_directories(dir);
    const int64_t q_dim = s.n_heads * s.head_dim, kv_dim = s.n_kv_heads * s.head_dim;
    const nlohmann::json config = {
        {"architectures", {"Qwen3MoeForCausalLM"}},
        {"model_type", "qwen3_moe"},
        {"vocab_size", s.vocab_size},
        {"hidden_size", s.hidden_dim},
        {"intermediate_size", s.expert_ffn_dim * 4},
        {"num_hidden_layers", s.n_layers},
        {"num_attention_heads", s.n_heads},
        {"num_key_value_heads", s.n_kv_heads},
        {"head_dim", s.head_dim},
        {"num_experts", s.n_experts},
        {"num_experts_per_tok", s.n_experts_active},
        {"moe_intermediate_size", s.expert_ffn_dim},
        {"decoder_sparse_step", 1},
        {"mlp_only_layers", nlohmann::json::array()},
        {"norm_topk_prob", true},
        {"max_position_embeddings", s.max_position_embeddings},
        {"rope_theta", s.rope_theta},
        {"rms_norm_eps", 1e-6},
        {"tie_word_embeddings", false},
        {"attention_bias", false},
        {"hidden_act", "silu"},
        {"bos_token_id", 1},
        {"eos_token_id", 2},
        {"torch_dtype", s.dtype == DType::F32   ? "float32"
                        : s.dtype == DType::F16 ? "float16"
                                                : "bfloat16"},
    };
    write_json(fs::path(dir) / "config.json", config);
    write_json(fs::path(dir) / "generation_config.json",
               {{"bos_token_id", 1}, {"eos_token_id", 2}});

    SplitMix64 rng{s.seed};
    // Scales chosen so activations keep unit-ish size through the layers and logits spread.
    const float embed_std = 1.0f;
    const float proj_std = 1.0f / std::sqrt(float(s.hidden_dim));
    std::vector<TensorData> tensors;
    auto add = [&](std::string name, std::vector<int64_t> shape, float std, float constant = 1.0f) {
        tensors.push_back(
            make_tensor_data(std::move(name), std::move(shape), s.dtype, std, constant, rng));
    };
    add("model.embed_tokens.weight", {s.vocab_size, s.hidden_dim}, embed_std);
    for (int64_t l = 0; l < s.n_layers; ++l) {
        const std::string p = "model.layers." + std::to_string(l) + ".";
        add(p + "input_layernorm.weight", {s.hidden_dim}, 0.0f);
        add(p + "post_attention_layernorm.weight", {s.hidden_dim}, 0.0f);
        add(p + "self_attn.q_proj.weight", {q_dim, s.hidden_dim}, proj_std);
        add(p + "self_attn.k_proj.weight", {kv_dim, s.hidden_dim}, proj_std);
        add(p + "self_attn.v_proj.weight", {kv_dim, s.hidden_dim}, proj_std);
        add(p + "self_attn.o_proj.weight", {s.hidden_dim, q_dim}, 1.0f / std::sqrt(float(q_dim)));
        add(p + "self_attn.q_norm.weight", {s.head_dim}, 0.0f);
        add(p + "self_attn.k_norm.weight", {s.head_dim}, 0.0f);
        add(p + "mlp.gate.weight", {s.n_experts, s.hidden_dim}, proj_std);
        for (int64_t e = 0; e < s.n_experts; ++e) {
            const std::string x = p + "mlp.experts." + std::to_string(e) + ".";
            add(x + "gate_proj.weight", {s.expert_ffn_dim, s.hidden_dim}, proj_std);
            add(x + "up_proj.weight", {s.expert_ffn_dim, s.hidden_dim}, proj_std);
            add(x + "down_proj.weight", {s.hidden_dim, s.expert_ffn_dim},
                1.0f / std::sqrt(float(s.expert_ffn_dim)));
        }
        if (on_progress) on_progress(l + 1, s.n_layers);
    }
    add("model.norm.weight", {s.hidden_dim}, 0.0f);
    add("lm_head.weight", {s.vocab_size, s.hidden_dim}, proj_std);

    std::vector<SafetensorsWriteEntry> entries;
    int64_t n_params = 0;
    for (const auto& t : tensors) {
        entries.push_back({.name = t.name, .dtype = s.dtype, .shape = t.shape, .data = t.bytes});
        n_params += int64_t(t.bytes.size()) / dtype_block_bytes(s.dtype);
    }
    if (on_progress) on_progress(s.n_layers + 1, s.n_layers);
    write_safetensors((fs::path(dir) / "model.safetensors").string(), entries,
                      {{"format", "pt"}, {"generator", "tandem-synth"}});
    return n_params;
}

}  // namespace tandem

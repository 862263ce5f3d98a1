#include "tools/synthetic_writer.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>

#include "kernels/error.h"
#include "models/gguf.h"
#include "tools/split_mix64.h"

namespace tandem {

namespace {

namespace fs = std::filesystem;

// One tensor to write: its values are uniform with standard deviation `std`, or all `constant`
// when std is 0 (norm weights).
struct PlannedTensor {
    std::string name;
    std::vector<int64_t> shape;  // outermost first
    DType dtype = DType::F32;
    float std = 0.0f;
    float constant = 1.0f;
};

int64_t numel(const std::vector<int64_t>& shape) {
    int64_t n = 1;
    for (int64_t d : shape)
        n *= d;
    return n;
}

int64_t tensor_bytes(const PlannedTensor& t) {
    return numel(t.shape) / dtype_block_size(t.dtype) * dtype_block_bytes(t.dtype);
}

// The standard deviation of a block's dequantized values per unit of its scale d, for random
// quant bytes (uniform codes, uniform 6-bit sub-block scales); the K-quants' dmin is set so that
// the mean is about zero. Derived from the block formulas of kernels/cpu/quant.h.
struct QuantScale {
    int64_t d_offset;     // byte offset of the f16 d in the block
    int64_t dmin_offset;  // of the f16 dmin; -1: none
    float std_per_d;
    float dmin_per_d;
};
QuantScale quant_scale(DType dtype) {
    switch (dtype) {
        case DType::Q8_0: return {0, -1, 73.9f, 0};      // int8 codes
        case DType::Q5_0: return {0, -1, 9.23f, 0};      // 5-bit codes - 16
        case DType::Q4_0: return {0, -1, 4.61f, 0};      // 4-bit codes - 8
        case DType::Q4_K: return {0, 2, 258.0f, 7.5f};   // d * sc * q - dmin * m, q in 0..15
        case DType::Q5_K: return {0, 2, 528.0f, 15.5f};  // q in 0..31
        case DType::Q6_K: return {208, -1, 1369.0f, 0};  // int8 scales x (6-bit codes - 32)
        default: fail("synthetic model: no random generator for ", dtype_name(dtype));
    }
}

// Fills `out` with the bytes of `n` values of `t` starting at element `first` (a multiple of the
// block size), from a generator seeded by the tensor and the position, so that the bytes do not
// depend on how the writer chunks the tensor.
void fill(const PlannedTensor& t, uint64_t seed, int64_t first, int64_t n, std::byte* out) {
    SplitMix64 rng{seed ^ (uint64_t(first) * 0xd1b54a32d192ed03ull)};
    if (is_quantized_weight_type(t.dtype)) {
        const int64_t block = dtype_block_size(t.dtype), block_bytes = dtype_block_bytes(t.dtype);
        const int64_t bytes = n / block * block_bytes;
        int64_t i = 0;
        for (; i + 8 <= bytes; i += 8) {
            const uint64_t r = rng.next();
            std::memcpy(out + i, &r, 8);
        }
        for (; i < bytes; ++i)
            out[i] = std::byte(rng.next());
        if (t.dtype == DType::MXFP4) {
            // Uniform nibbles give values of RMS 5.85 (twice e2m1's, kMxfp4Doubled) per unit of
            // the block scale 2^(e - 128): pick e for the tensor's std.
            const int e = std::clamp(
                128 + int(std::lround(std::log2(std::max(t.std, 1e-30f) / 5.85f))), 1, 254);
            for (int64_t b = 0; b < n / block; ++b)
                out[b * block_bytes] = std::byte(e);
            return;
        }
        const QuantScale q = quant_scale(t.dtype);
        const float d = t.std / q.std_per_d;
        const uint16_t d16 = f32_to_f16(d), dmin16 = f32_to_f16(d * q.dmin_per_d);
        for (int64_t b = 0; b < n / block; ++b) {
            std::memcpy(out + b * block_bytes + q.d_offset, &d16, 2);
            if (q.dmin_offset >= 0) std::memcpy(out + b * block_bytes + q.dmin_offset, &dmin16, 2);
        }
        return;
    }
    // Uniform on [-a, a] has standard deviation a / sqrt(3); four 16-bit draws per call.
    const float amplitude = t.std * std::sqrt(3.0f) / 32768.0f;
    uint64_t bits = 0;
    for (int64_t i = 0; i < n; ++i) {
        if (i % 4 == 0) bits = rng.next();
        const float value = t.std > 0
                                ? amplitude * float(int((bits >> (16 * (i % 4))) & 0xffff) - 32768)
                                : t.constant;
        switch (t.dtype) {
            case DType::F32: std::memcpy(out + 4 * i, &value, 4); break;
            case DType::F16: {
                const uint16_t h = f32_to_f16(value);
                std::memcpy(out + 2 * i, &h, 2);
                break;
            }
            case DType::BF16: {
                const uint16_t h = f32_to_bf16(value);
                std::memcpy(out + 2 * i, &h, 2);
                break;
            }
            default: fail("synthetic model: unsupported dtype ", dtype_name(t.dtype));
        }
    }
}

// Streams every tensor's bytes to `out`, in order, in chunks of whole rows of at most ~64 MB.
void write_tensor_data(std::ofstream& out, const std::vector<PlannedTensor>& tensors, uint64_t seed,
                       int64_t alignment, const std::string& path) {
    std::vector<std::byte> buffer;
    for (size_t k = 0; k < tensors.size(); ++k) {
        const PlannedTensor& t = tensors[k];
        const int64_t row = t.shape.back(), n = numel(t.shape);
        const int64_t rows_per_chunk =
            std::max<int64_t>(1, (int64_t(64) << 20) / std::max<int64_t>(1, row));
        const uint64_t tensor_seed = SplitMix64{seed + 0x632be59bd9b4e019ull * (k + 1)}.next();
        for (int64_t first = 0; first < n; first += rows_per_chunk * row) {
            const int64_t count = std::min(rows_per_chunk * row, n - first);
            buffer.resize(size_t(count / dtype_block_size(t.dtype) * dtype_block_bytes(t.dtype)));
            fill(t, tensor_seed, first, count, buffer.data());
            out.write(reinterpret_cast<const char*>(buffer.data()), std::streamsize(buffer.size()));
        }
        const int64_t pad = (alignment - tensor_bytes(t) % alignment) % alignment;
        for (int64_t i = 0; i < pad; ++i)
            out.put('\0');
        if (!out) fail(path, ": write failed (disk full?)");
    }
}

// Rows of `cols` values stay in `dtype` when they are whole blocks, else fall back as llama.cpp
// does (q8_0, then f16).
DType matrix_type(DType dtype, int64_t cols) {
    for (DType t : {dtype, DType::Q8_0, DType::F16})
        if (cols % dtype_block_size(t) == 0) return t;
    return DType::F32;
}

bool is_qwen(SyntheticArch arch) {
    return arch == SyntheticArch::Qwen3Moe || arch == SyntheticArch::Qwen2Moe;
}

// ---- Hugging Face layout ---------------------------------------------------------------------

bool is_deepseek(SyntheticArch arch) {
    return arch == SyntheticArch::DeepseekV2;
}

bool is_glm(SyntheticArch arch) {
    return arch == SyntheticArch::Glm4Moe;
}

bool is_gpt_oss(SyntheticArch arch) {
    return arch == SyntheticArch::GptOss;
}

// gpt-oss's config.json keys, as on the Hub (alternating sliding and full layers, biases
// everywhere, YaRN without truncation, the clamped SwiGLU's limit).
void gpt_oss_config(const SyntheticModelSpec& s, nlohmann::json& c) {
    c["architectures"] = {"GptOssForCausalLM"};
    c["model_type"] = "gpt_oss";
    c["num_local_experts"] = s.n_experts;
    c["intermediate_size"] = s.expert_ffn_dim;
    c["attention_bias"] = true;
    c["sliding_window"] = s.sliding_window;
    nlohmann::json types = nlohmann::json::array();
    for (int64_t l = 0; l < s.n_layers; ++l)
        types.push_back(l % 2 == 0 ? "sliding_attention" : "full_attention");
    c["layer_types"] = types;
    c["swiglu_limit"] = 7.0;
    c["rope_scaling"] = {{"rope_type", "yarn"},
                         {"factor", s.yarn_factor},
                         {"original_max_position_embeddings", s.yarn_original_context},
                         {"beta_fast", 32.0},
                         {"beta_slow", 1.0},
                         {"truncate", false}};
}

float fan_in_std(int64_t fan_in) {
    return 1.0f / std::sqrt(float(fan_in));
}

// DeepSeek-V2's config.json keys, as on the Hub (DeepSeek-V2-Lite's: softmax greedy routing,
// unscaled, no renormalisation).
void deepseek_config(const SyntheticModelSpec& s, nlohmann::json& c) {
    c["architectures"] = {"DeepseekV2ForCausalLM"};
    c["model_type"] = "deepseek_v2";
    c.erase("head_dim");  // transformers derives it; Hub configs lack it
    c["num_key_value_heads"] = s.n_heads;
    c["q_lora_rank"] = s.mla.q_lora_rank > 0 ? nlohmann::json(s.mla.q_lora_rank) : nullptr;
    c["kv_lora_rank"] = s.mla.kv_lora_rank;
    c["qk_nope_head_dim"] = s.mla.qk_nope_head_dim;
    c["qk_rope_head_dim"] = s.mla.qk_rope_head_dim;
    c["v_head_dim"] = s.mla.v_head_dim;
    c["n_routed_experts"] = s.n_experts;
    c["moe_intermediate_size"] = s.expert_ffn_dim;
    c["n_shared_experts"] = s.shared_expert_ffn_dim / s.expert_ffn_dim;
    c["intermediate_size"] = s.dense_ffn_dim;
    c["first_k_dense_replace"] = s.n_dense_layers;
    c["moe_layer_freq"] = 1;
    c["scoring_func"] = "softmax";
    c["topk_method"] = "greedy";
    c["n_group"] = 1;
    c["topk_group"] = 1;
    c["routed_scaling_factor"] = 1.0;
    if (s.yarn_factor > 0)
        c["rope_scaling"] = {{"type", "yarn"},
                             {"factor", s.yarn_factor},
                             {"original_max_position_embeddings", s.yarn_original_context},
                             {"mscale", s.yarn_mscale},
                             {"mscale_all_dim", s.yarn_mscale},
                             {"beta_fast", 32},
                             {"beta_slow", 1}};
}

// GLM-4.5's config.json keys, as on the Hub (GLM-4.5-Air's: q/k/v biases, no q/k norm,
// sigmoid routing without groups, unscaled, renormalised).
void glm_config(const SyntheticModelSpec& s, nlohmann::json& c) {
    c["architectures"] = {"Glm4MoeForCausalLM"};
    c["model_type"] = "glm4_moe";
    c["n_routed_experts"] = s.n_experts;
    c["moe_intermediate_size"] = s.expert_ffn_dim;
    c["n_shared_experts"] = s.shared_expert_ffn_dim / s.expert_ffn_dim;
    c["intermediate_size"] = s.dense_ffn_dim;
    c["first_k_dense_replace"] = s.n_dense_layers;
    c["n_group"] = 1;
    c["topk_group"] = 1;
    c["routed_scaling_factor"] = 1.0;
    c["attention_bias"] = true;
    c["use_qk_norm"] = false;
    c["partial_rotary_factor"] = s.partial_rotary_factor;
    c["num_nextn_predict_layers"] = 0;  // the real checkpoints' MTP layer is not written
}

// DeepSeek-V2's latent attention projections, with Hugging Face's names and kv_b, or with
// llama.cpp's names and kv_b split into attn_k_b and attn_v_b as its converter writes them now.
template <class Add>
void plan_mla(const SyntheticModelSpec& s, const std::string& p, bool gguf, Add&& add) {
    const SyntheticMla& m = s.mla;
    const int64_t h = s.n_heads, qk = m.qk_nope_head_dim + m.qk_rope_head_dim;
    const std::string a = p + (gguf ? "attn_" : "self_attn.");
    const auto name = [&](const char* hf, const char* ggml) {
        return a + (gguf ? ggml : hf) + ".weight";
    };
    if (m.q_lora_rank > 0) {
        add(name("q_a_proj", "q_a"), {m.q_lora_rank, s.hidden_dim}, fan_in_std(s.hidden_dim));
        add(name("q_a_layernorm", "q_a_norm"), {m.q_lora_rank}, 0.0f);
        add(name("q_b_proj", "q_b"), {h * qk, m.q_lora_rank}, fan_in_std(m.q_lora_rank));
    } else {
        add(name("q_proj", "q"), {h * qk, s.hidden_dim}, fan_in_std(s.hidden_dim));
    }
    add(name("kv_a_proj_with_mqa", "kv_a_mqa"), {m.kv_lora_rank + m.qk_rope_head_dim, s.hidden_dim},
        fan_in_std(s.hidden_dim));
    add(name("kv_a_layernorm", "kv_a_norm"), {m.kv_lora_rank}, 0.0f);
    if (gguf) {
        // W_UK's values as in kv_b, stored transposed per head
        add(a + "k_b.weight", {h, m.kv_lora_rank, m.qk_nope_head_dim}, fan_in_std(m.kv_lora_rank));
        add(a + "v_b.weight", {h, m.v_head_dim, m.kv_lora_rank}, fan_in_std(m.kv_lora_rank));
    } else {
        add(a + "kv_b_proj.weight", {h * (m.qk_nope_head_dim + m.v_head_dim), m.kv_lora_rank},
            fan_in_std(m.kv_lora_rank));
    }
    add(name("o_proj", "output"), {s.hidden_dim, h * m.v_head_dim}, fan_in_std(h * m.v_head_dim));
}

nlohmann::json hf_config(const SyntheticModelSpec& s, DType dtype) {
    nlohmann::json c = {
        {"vocab_size", s.vocab_size},
        {"hidden_size", s.hidden_dim},
        {"num_hidden_layers", s.n_layers},
        {"num_attention_heads", s.n_heads},
        {"num_key_value_heads", s.n_kv_heads},
        {"head_dim", s.head_dim},
        {"num_experts_per_tok", s.n_experts_active},
        {"norm_topk_prob", s.norm_topk_prob},
        {"max_position_embeddings", s.max_position_embeddings},
        {"rope_theta", s.rope_theta},
        {"rms_norm_eps", 1e-6},
        {"tie_word_embeddings", false},
        {"hidden_act", "silu"},
        {"bos_token_id", 1},
        {"eos_token_id", 2},
        {"torch_dtype", dtype == DType::F32   ? "float32"
                        : dtype == DType::F16 ? "float16"
                                              : "bfloat16"},
    };
    switch (s.arch) {
        case SyntheticArch::Qwen3Moe:
        case SyntheticArch::Qwen2Moe:
            c["architectures"] = {s.arch == SyntheticArch::Qwen3Moe ? "Qwen3MoeForCausalLM"
                                                                    : "Qwen2MoeForCausalLM"};
            c["model_type"] = s.arch == SyntheticArch::Qwen3Moe ? "qwen3_moe" : "qwen2_moe";
            c["num_experts"] = s.n_experts;
            c["moe_intermediate_size"] = s.expert_ffn_dim;
            c["intermediate_size"] = std::max(s.shared_expert_ffn_dim, s.expert_ffn_dim * 4);
            c["decoder_sparse_step"] = 1;
            c["mlp_only_layers"] = nlohmann::json::array();
            if (s.shared_expert_ffn_dim > 0)
                c["shared_expert_intermediate_size"] = s.shared_expert_ffn_dim;
            break;
        case SyntheticArch::Olmoe:
            c["architectures"] = {"OlmoeForCausalLM"};
            c["model_type"] = "olmoe";
            c["num_experts"] = s.n_experts;
            c["intermediate_size"] = s.expert_ffn_dim;
            break;
        case SyntheticArch::Mixtral:
            c["architectures"] = {"MixtralForCausalLM"};
            c["model_type"] = "mixtral";
            c["num_local_experts"] = s.n_experts;
            c["intermediate_size"] = s.expert_ffn_dim;
            break;
        case SyntheticArch::DeepseekV2: deepseek_config(s, c); break;
        case SyntheticArch::Glm4Moe: glm_config(s, c); break;
        case SyntheticArch::GptOss: gpt_oss_config(s, c); break;
    }
    return c;
}

std::vector<PlannedTensor> hf_tensors(const SyntheticModelSpec& s, DType dtype) {
    const int64_t q_dim = s.n_heads * s.head_dim, kv_dim = s.n_kv_heads * s.head_dim;
    const float proj_std = 1.0f / std::sqrt(float(s.hidden_dim));
    std::vector<PlannedTensor> ts;
    auto add = [&](std::string name, std::vector<int64_t> shape, float std) {
        ts.push_back({std::move(name), std::move(shape), dtype, std, 1.0f});
    };
    add("model.embed_tokens.weight", {s.vocab_size, s.hidden_dim}, 1.0f);
    for (int64_t l = 0; l < s.n_layers; ++l) {
        const std::string p = "model.layers." + std::to_string(l) + ".";
        add(p + "input_layernorm.weight", {s.hidden_dim}, 0.0f);
        add(p + "post_attention_layernorm.weight", {s.hidden_dim}, 0.0f);
        if (is_deepseek(s.arch)) {
            plan_mla(s, p, false, add);
            if (l < s.n_dense_layers) {
                const int64_t f = s.dense_ffn_dim;
                add(p + "mlp.gate_proj.weight", {f, s.hidden_dim}, proj_std);
                add(p + "mlp.up_proj.weight", {f, s.hidden_dim}, proj_std);
                add(p + "mlp.down_proj.weight", {s.hidden_dim, f}, fan_in_std(f));
                continue;
            }
        } else {
            add(p + "self_attn.q_proj.weight", {q_dim, s.hidden_dim}, proj_std);
            add(p + "self_attn.k_proj.weight", {kv_dim, s.hidden_dim}, proj_std);
            add(p + "self_attn.v_proj.weight", {kv_dim, s.hidden_dim}, proj_std);
            add(p + "self_attn.o_proj.weight", {s.hidden_dim, q_dim}, fan_in_std(q_dim));
        }
        if (s.arch == SyntheticArch::Qwen2Moe || is_glm(s.arch) || is_gpt_oss(s.arch)) {
            add(p + "self_attn.q_proj.bias", {q_dim}, 0.02f);
            add(p + "self_attn.k_proj.bias", {kv_dim}, 0.02f);
            add(p + "self_attn.v_proj.bias", {kv_dim}, 0.02f);
        }
        if (is_gpt_oss(s.arch)) {  // the Hub's fused experts: [E, in, out], gate/up interleaved
            const int64_t e = s.n_experts, f = s.expert_ffn_dim, h = s.hidden_dim;
            add(p + "self_attn.o_proj.bias", {h}, 0.02f);
            add(p + "self_attn.sinks", {s.n_heads}, 0.5f);
            add(p + "mlp.router.weight", {e, h}, proj_std);
            add(p + "mlp.router.bias", {e}, 0.02f);
            add(p + "mlp.experts.gate_up_proj", {e, h, 2 * f}, proj_std);
            add(p + "mlp.experts.gate_up_proj_bias", {e, 2 * f}, 0.02f);
            add(p + "mlp.experts.down_proj", {e, f, h}, fan_in_std(f));
            add(p + "mlp.experts.down_proj_bias", {e, h}, 0.02f);
            continue;
        }
        if (is_glm(s.arch) && l < s.n_dense_layers) {
            const int64_t f = s.dense_ffn_dim;
            add(p + "mlp.gate_proj.weight", {f, s.hidden_dim}, proj_std);
            add(p + "mlp.up_proj.weight", {f, s.hidden_dim}, proj_std);
            add(p + "mlp.down_proj.weight", {s.hidden_dim, f}, fan_in_std(f));
            continue;
        }
        if (s.arch == SyntheticArch::Qwen3Moe) {
            add(p + "self_attn.q_norm.weight", {s.head_dim}, 0.0f);
            add(p + "self_attn.k_norm.weight", {s.head_dim}, 0.0f);
        } else if (s.arch == SyntheticArch::Olmoe) {
            add(p + "self_attn.q_norm.weight", {q_dim}, 0.0f);
            add(p + "self_attn.k_norm.weight", {kv_dim}, 0.0f);
        }
        const bool mixtral = s.arch == SyntheticArch::Mixtral;
        const std::string moe = p + (mixtral ? "block_sparse_moe." : "mlp.");
        add(moe + "gate.weight", {s.n_experts, s.hidden_dim}, proj_std);
        if (is_glm(s.arch)) add(moe + "gate.e_score_correction_bias", {s.n_experts}, 0.01f);
        const float down_std = 1.0f / std::sqrt(float(s.expert_ffn_dim));
        for (int64_t e = 0; e < s.n_experts; ++e) {
            const std::string x = moe + "experts." + std::to_string(e) + ".";
            add(x + (mixtral ? "w1" : "gate_proj") + ".weight", {s.expert_ffn_dim, s.hidden_dim},
                proj_std);
            add(x + (mixtral ? "w3" : "up_proj") + ".weight", {s.expert_ffn_dim, s.hidden_dim},
                proj_std);
            add(x + (mixtral ? "w2" : "down_proj") + ".weight", {s.hidden_dim, s.expert_ffn_dim},
                down_std);
        }
        if (s.shared_expert_ffn_dim > 0) {
            const int64_t f = s.shared_expert_ffn_dim;
            const std::string shared =
                p + (is_deepseek(s.arch) || is_glm(s.arch) ? "mlp.shared_experts."
                                                           : "mlp.shared_expert.");
            add(shared + "gate_proj.weight", {f, s.hidden_dim}, proj_std);
            add(shared + "up_proj.weight", {f, s.hidden_dim}, proj_std);
            add(shared + "down_proj.weight", {s.hidden_dim, f}, fan_in_std(f));
            if (s.arch == SyntheticArch::Qwen2Moe)  // DeepSeek's shared experts are ungated
                add(p + "mlp.shared_expert_gate.weight", {1, s.hidden_dim}, proj_std);
        }
    }
    add("model.norm.weight", {s.hidden_dim}, 0.0f);
    add("lm_head.weight", {s.vocab_size, s.hidden_dim}, proj_std);
    return ts;
}

void write_json(const fs::path& path, const nlohmann::json& json) {
    std::ofstream out(path);
    out << json.dump(2) << "\n";
    if (!out) fail(path.string(), ": write failed");
}

// ---- GGUF layout (llama.cpp's names; gguf.md in ggml's docs) ---------------------------------

const char* gguf_arch(SyntheticArch arch) {
    switch (arch) {
        case SyntheticArch::Qwen3Moe: return "qwen3moe";
        case SyntheticArch::Qwen2Moe: return "qwen2moe";
        case SyntheticArch::Olmoe: return "olmoe";
        case SyntheticArch::Mixtral: return "llama";
        case SyntheticArch::DeepseekV2: return "deepseek2";
        case SyntheticArch::Glm4Moe: return "glm4moe";
        case SyntheticArch::GptOss: return "gpt-oss";
    }
    return "";
}

std::vector<PlannedTensor> gguf_tensors(const SyntheticModelSpec& s, DType dtype) {
    const int64_t q_dim = s.n_heads * s.head_dim, kv_dim = s.n_kv_heads * s.head_dim;
    const float proj_std = 1.0f / std::sqrt(float(s.hidden_dim));
    std::vector<PlannedTensor> ts;
    auto matrix = [&](std::string name, std::vector<int64_t> shape, float std) {
        ts.push_back({std::move(name), shape, matrix_type(dtype, shape.back()), std, 1.0f});
    };
    auto f32 = [&](std::string name, std::vector<int64_t> shape, float std) {
        ts.push_back({std::move(name), std::move(shape), DType::F32, std, 1.0f});
    };
    matrix("token_embd.weight", {s.vocab_size, s.hidden_dim}, 1.0f);
    for (int64_t l = 0; l < s.n_layers; ++l) {
        const std::string p = "blk." + std::to_string(l) + ".";
        f32(p + "attn_norm.weight", {s.hidden_dim}, 0.0f);
        if (is_deepseek(s.arch)) {
            plan_mla(s, p, true, [&](std::string name, std::vector<int64_t> shape, float std) {
                if (shape.size() == 1) return f32(std::move(name), std::move(shape), std);
                matrix(std::move(name), std::move(shape), std);
            });
            f32(p + "ffn_norm.weight", {s.hidden_dim}, 0.0f);
            if (l < s.n_dense_layers) {
                const int64_t f = s.dense_ffn_dim;
                matrix(p + "ffn_gate.weight", {f, s.hidden_dim}, proj_std);
                matrix(p + "ffn_up.weight", {f, s.hidden_dim}, proj_std);
                matrix(p + "ffn_down.weight", {s.hidden_dim, f}, fan_in_std(f));
                continue;
            }
        } else {
            matrix(p + "attn_q.weight", {q_dim, s.hidden_dim}, proj_std);
            matrix(p + "attn_k.weight", {kv_dim, s.hidden_dim}, proj_std);
            matrix(p + "attn_v.weight", {kv_dim, s.hidden_dim}, proj_std);
            matrix(p + "attn_output.weight", {s.hidden_dim, q_dim}, fan_in_std(q_dim));
        }
        if (s.arch == SyntheticArch::Qwen2Moe || is_glm(s.arch) || is_gpt_oss(s.arch)) {
            f32(p + "attn_q.bias", {q_dim}, 0.02f);
            f32(p + "attn_k.bias", {kv_dim}, 0.02f);
            f32(p + "attn_v.bias", {kv_dim}, 0.02f);
        }
        if (is_gpt_oss(s.arch)) {  // llama.cpp's GptOssModel names; gate and up split
            const int64_t e = s.n_experts, f = s.expert_ffn_dim, h = s.hidden_dim;
            f32(p + "attn_output.bias", {h}, 0.02f);
            f32(p + "attn_sinks.weight", {s.n_heads}, 0.5f);
            f32(p + "post_attention_norm.weight", {h}, 0.0f);
            f32(p + "ffn_gate_inp.weight", {e, h}, proj_std);
            f32(p + "ffn_gate_inp.bias", {e}, 0.02f);
            matrix(p + "ffn_gate_exps.weight", {e, f, h}, proj_std);
            matrix(p + "ffn_up_exps.weight", {e, f, h}, proj_std);
            matrix(p + "ffn_down_exps.weight", {e, h, f}, fan_in_std(f));
            f32(p + "ffn_gate_exps.bias", {e, f}, 0.02f);
            f32(p + "ffn_up_exps.bias", {e, f}, 0.02f);
            f32(p + "ffn_down_exps.bias", {e, h}, 0.02f);
            continue;
        }
        if (is_glm(s.arch)) {  // Glm4MoeModel's name for the FFN's input norm
            f32(p + "post_attention_norm.weight", {s.hidden_dim}, 0.0f);
            if (l < s.n_dense_layers) {
                const int64_t f = s.dense_ffn_dim;
                matrix(p + "ffn_gate.weight", {f, s.hidden_dim}, proj_std);
                matrix(p + "ffn_up.weight", {f, s.hidden_dim}, proj_std);
                matrix(p + "ffn_down.weight", {s.hidden_dim, f}, fan_in_std(f));
                continue;
            }
        }
        if (s.arch == SyntheticArch::Qwen3Moe) {
            f32(p + "attn_q_norm.weight", {s.head_dim}, 0.0f);
            f32(p + "attn_k_norm.weight", {s.head_dim}, 0.0f);
        } else if (s.arch == SyntheticArch::Olmoe) {
            f32(p + "attn_q_norm.weight", {q_dim}, 0.0f);
            f32(p + "attn_k_norm.weight", {kv_dim}, 0.0f);
        }
        if (!is_deepseek(s.arch) && !is_glm(s.arch))
            f32(p + "ffn_norm.weight", {s.hidden_dim}, 0.0f);
        f32(p + "ffn_gate_inp.weight", {s.n_experts, s.hidden_dim}, proj_std);
        if (is_glm(s.arch)) f32(p + "exp_probs_b.bias", {s.n_experts}, 0.01f);
        const int64_t e = s.n_experts, f = s.expert_ffn_dim;
        matrix(p + "ffn_gate_exps.weight", {e, f, s.hidden_dim}, proj_std);
        matrix(p + "ffn_up_exps.weight", {e, f, s.hidden_dim}, proj_std);
        matrix(p + "ffn_down_exps.weight", {e, s.hidden_dim, f}, 1.0f / std::sqrt(float(f)));
        if (s.shared_expert_ffn_dim > 0) {
            const int64_t g = s.shared_expert_ffn_dim;
            if (s.arch == SyntheticArch::Qwen2Moe)
                f32(p + "ffn_gate_inp_shexp.weight", {s.hidden_dim}, proj_std);
            matrix(p + "ffn_gate_shexp.weight", {g, s.hidden_dim}, proj_std);
            matrix(p + "ffn_up_shexp.weight", {g, s.hidden_dim}, proj_std);
            matrix(p + "ffn_down_shexp.weight", {s.hidden_dim, g}, 1.0f / std::sqrt(float(g)));
        }
    }
    f32("output_norm.weight", {s.hidden_dim}, 0.0f);
    matrix("output.weight", {s.vocab_size, s.hidden_dim}, proj_std);
    return ts;
}

// Little-endian GGUF v3 serialisation of the header (metadata and tensor infos).
class GgufHeader {
  public:
    void u32(uint32_t v) { raw(&v, 4); }
    void u64(uint64_t v) { raw(&v, 8); }
    void str(const std::string& s) {
        u64(s.size());
        raw(s.data(), s.size());
    }
    void key(const std::string& k, GgufValueType type) {
        str(k);
        u32(uint32_t(type));
        ++n_kv;
    }
    void kv_u32(const std::string& k, uint32_t v) {
        key(k, GgufValueType::U32);
        u32(v);
    }
    void kv_f32(const std::string& k, float v) {
        key(k, GgufValueType::F32);
        raw(&v, 4);
    }
    void kv_bool(const std::string& k, bool v) {
        key(k, GgufValueType::Bool);
        const uint8_t b = v;
        raw(&b, 1);
    }
    void kv_str(const std::string& k, const std::string& v) {
        key(k, GgufValueType::String);
        str(v);
    }
    template <class T>
    void kv_array(const std::string& k, GgufValueType type, const std::vector<T>& values) {
        key(k, GgufValueType::Array);
        u32(uint32_t(type));
        u64(values.size());
        for (const T& v : values) {
            if constexpr (std::is_same_v<T, std::string>)
                str(v);
            else
                raw(&v, sizeof(T));
        }
    }
    void raw(const void* p, size_t n) {
        bytes.insert(bytes.end(), static_cast<const char*>(p), static_cast<const char*>(p) + n);
    }

    std::string bytes;
    uint64_t n_kv = 0;
};

// deepseek2's keys as llama.cpp's converter writes them since its MLA support: head_count_kv 1
// and key/value lengths of the latent row, the heads' widths in the *_mla keys.
void gguf_deepseek_metadata(GgufHeader& h, const SyntheticModelSpec& s) {
    const std::string a = gguf_arch(s.arch);
    const SyntheticMla& m = s.mla;
    h.kv_u32(a + ".attention.head_count_kv", 1);
    if (m.q_lora_rank > 0) h.kv_u32(a + ".attention.q_lora_rank", uint32_t(m.q_lora_rank));
    h.kv_u32(a + ".attention.kv_lora_rank", uint32_t(m.kv_lora_rank));
    h.kv_u32(a + ".attention.key_length", uint32_t(m.kv_lora_rank + m.qk_rope_head_dim));
    h.kv_u32(a + ".attention.value_length", uint32_t(m.kv_lora_rank));
    h.kv_u32(a + ".attention.key_length_mla", uint32_t(m.qk_nope_head_dim + m.qk_rope_head_dim));
    h.kv_u32(a + ".attention.value_length_mla", uint32_t(m.v_head_dim));
    h.kv_u32(a + ".rope.dimension_count", uint32_t(m.qk_rope_head_dim));
    h.kv_u32(a + ".leading_dense_block_count", uint32_t(s.n_dense_layers));
    h.kv_u32(a + ".expert_feed_forward_length", uint32_t(s.expert_ffn_dim));
    h.kv_u32(a + ".expert_shared_count", uint32_t(s.shared_expert_ffn_dim / s.expert_ffn_dim));
    h.kv_f32(a + ".expert_weights_scale", 1.0f);
    h.kv_u32(a + ".expert_gating_func", 1);  // softmax
    h.kv_u32(a + ".vocab_size", uint32_t(s.vocab_size));
    if (s.yarn_factor > 0) {
        h.kv_str(a + ".rope.scaling.type", "yarn");
        h.kv_f32(a + ".rope.scaling.factor", float(s.yarn_factor));
        h.kv_u32(a + ".rope.scaling.original_context_length", uint32_t(s.yarn_original_context));
        h.kv_f32(a + ".rope.scaling.yarn_log_multiplier", float(0.1 * s.yarn_mscale));
    }
}

// glm4moe's keys as llama.cpp's Glm4MoeModel converter writes them (no MTP block here).
void gguf_glm_metadata(GgufHeader& h, const SyntheticModelSpec& s) {
    const std::string a = gguf_arch(s.arch);
    h.kv_u32(a + ".leading_dense_block_count", uint32_t(s.n_dense_layers));
    h.kv_u32(a + ".expert_feed_forward_length", uint32_t(s.expert_ffn_dim));
    h.kv_u32(a + ".expert_shared_count", uint32_t(s.shared_expert_ffn_dim / s.expert_ffn_dim));
    h.kv_f32(a + ".expert_weights_scale", 1.0f);
    h.kv_u32(a + ".expert_gating_func", 2);  // sigmoid
    h.kv_u32(a + ".nextn_predict_layers", 0);
}

void gguf_metadata(GgufHeader& h, const SyntheticModelSpec& s) {
    const std::string a = gguf_arch(s.arch);
    h.kv_str("general.architecture", a);
    h.kv_str("general.name", "synthetic-" + s.name);
    h.kv_u32(a + ".block_count", uint32_t(s.n_layers));
    h.kv_u32(a + ".context_length", uint32_t(s.max_position_embeddings));
    h.kv_u32(a + ".embedding_length", uint32_t(s.hidden_dim));
    h.kv_u32(a + ".feed_forward_length",
             uint32_t(is_qwen(s.arch) ? std::max(s.shared_expert_ffn_dim, 4 * s.expert_ffn_dim)
                      : is_deepseek(s.arch) || is_glm(s.arch) ? s.dense_ffn_dim
                                                              : s.expert_ffn_dim));
    h.kv_u32(a + ".attention.head_count", uint32_t(s.n_heads));
    if (is_deepseek(s.arch)) {
        gguf_deepseek_metadata(h, s);
    } else {
        h.kv_u32(a + ".attention.head_count_kv", uint32_t(s.n_kv_heads));
        h.kv_u32(a + ".attention.key_length", uint32_t(s.head_dim));
        h.kv_u32(a + ".attention.value_length", uint32_t(s.head_dim));
        h.kv_u32(a + ".rope.dimension_count",
                 uint32_t(double(s.head_dim) * s.partial_rotary_factor));
        if (is_glm(s.arch)) gguf_glm_metadata(h, s);
        if (is_gpt_oss(s.arch)) {
            h.kv_u32(a + ".expert_feed_forward_length", uint32_t(s.expert_ffn_dim));
            h.kv_u32(a + ".attention.sliding_window", uint32_t(s.sliding_window));
            h.kv_str(a + ".rope.scaling.type", "yarn");
            h.kv_f32(a + ".rope.scaling.factor", float(s.yarn_factor));
            h.kv_u32(a + ".rope.scaling.original_context_length",
                     uint32_t(s.yarn_original_context));
        }
    }
    h.kv_f32(a + ".attention.layer_norm_rms_epsilon", 1e-6f);
    h.kv_f32(a + ".rope.freq_base", float(s.rope_theta));
    h.kv_u32(a + ".expert_count", uint32_t(s.n_experts));
    h.kv_u32(a + ".expert_used_count", uint32_t(s.n_experts_active));
    if (is_qwen(s.arch)) h.kv_u32(a + ".expert_feed_forward_length", uint32_t(s.expert_ffn_dim));
    if (s.shared_expert_ffn_dim > 0 && !is_deepseek(s.arch))  // deepseek2: expert_shared_count
        h.kv_u32(a + ".expert_shared_feed_forward_length", uint32_t(s.shared_expert_ffn_dim));
    h.kv_bool(a + ".expert_weights_norm", s.norm_topk_prob);
    if (s.arch == SyntheticArch::Mixtral) h.kv_u32(a + ".vocab_size", uint32_t(s.vocab_size));

    // Placeholder SentencePiece vocabulary: <unk> <s> </s>, the 256 byte tokens llama.cpp looks
    // up (it needs <0x0A>), then numbered pieces.
    std::vector<std::string> tokens;
    std::vector<float> scores;
    std::vector<int32_t> types;
    tokens.reserve(size_t(s.vocab_size));
    const char* specials[] = {"<unk>", "<s>", "</s>"};
    for (int64_t i = 0; i < s.vocab_size; ++i) {
        if (i < 3) {
            tokens.push_back(specials[i]);
            types.push_back(i == 0 ? 2 : 3);  // unknown, control
        } else if (i < 3 + 256) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "<0x%02X>", unsigned(i - 3));
            tokens.push_back(buf);
            types.push_back(6);  // byte
        } else {
            tokens.push_back("\xe2\x96\x81t" + std::to_string(i));
            types.push_back(1);  // normal
        }
        scores.push_back(i < 259 ? 0.0f : -float(i));
    }
    h.kv_str("tokenizer.ggml.model", "llama");
    h.kv_array("tokenizer.ggml.tokens", GgufValueType::String, tokens);
    h.kv_array("tokenizer.ggml.scores", GgufValueType::F32, scores);
    h.kv_array("tokenizer.ggml.token_type", GgufValueType::I32, types);
    h.kv_u32("tokenizer.ggml.unknown_token_id", 0);
    h.kv_u32("tokenizer.ggml.bos_token_id", 1);
    h.kv_u32("tokenizer.ggml.eos_token_id", 2);
    h.kv_bool("tokenizer.ggml.add_bos_token", false);
}

}  // namespace

std::vector<std::string> synthetic_preset_names() {
    return {"mixtral-8x7b", "qwen3-30b-a3b",     "qwen2-57b-a14b",
            "olmoe-1b-7b",  "qwen1.5-moe-a2.7b", "deepseek-v2-lite",
            "glm-4.5-air",  "gpt-oss-20b",       "gpt-oss-120b"};
}

// zai-org/GLM-4.5-Air's config.json: 106B parameters, 12B active; the first layer dense, 1
// shared expert, rotary on half of each head, q/k/v biases, sigmoid routing.
SyntheticModelSpec glm_4_5_air() {
    return {.name = "glm-4.5-air",
            .arch = SyntheticArch::Glm4Moe,
            .vocab_size = 151552,
            .hidden_dim = 4096,
            .n_layers = 46,
            .n_heads = 96,
            .n_kv_heads = 8,
            .head_dim = 128,
            .n_experts = 128,
            .n_experts_active = 8,
            .expert_ffn_dim = 1408,
            .shared_expert_ffn_dim = 1408,
            .max_position_embeddings = 131072,
            .rope_theta = 1000000.0,
            .norm_topk_prob = true,
            .n_dense_layers = 1,
            .dense_ffn_dim = 10944,
            .partial_rotary_factor = 0.5};
}

// openai/gpt-oss-20b's and gpt-oss-120b's config.json: 64 heads x 64 on 8 KV heads, experts as
// wide as hidden (2880), top-4, a 128-token window on even layers, YaRN x32 over 4096.
SyntheticModelSpec gpt_oss(const std::string& name, int64_t n_layers, int64_t n_experts) {
    return {.name = name,
            .arch = SyntheticArch::GptOss,
            .vocab_size = 201088,
            .hidden_dim = 2880,
            .n_layers = n_layers,
            .n_heads = 64,
            .n_kv_heads = 8,
            .head_dim = 64,
            .n_experts = n_experts,
            .n_experts_active = 4,
            .expert_ffn_dim = 2880,
            .max_position_embeddings = 131072,
            .rope_theta = 150000.0,
            .norm_topk_prob = true,
            .sliding_window = 128,
            .yarn_factor = 32.0,
            .yarn_original_context = 4096};
}

// DeepSeek-V2-Lite's config.json (reference/models.md 3.2): MLA without q_lora, 2 shared experts,
// the first layer dense, YaRN x40 over 4096 positions.
SyntheticModelSpec deepseek_v2_lite() {
    return {.name = "deepseek-v2-lite",
            .arch = SyntheticArch::DeepseekV2,
            .vocab_size = 102400,
            .hidden_dim = 2048,
            .n_layers = 27,
            .n_heads = 16,
            .n_kv_heads = 16,
            .n_experts = 64,
            .n_experts_active = 6,
            .expert_ffn_dim = 1408,
            .shared_expert_ffn_dim = 2 * 1408,
            .max_position_embeddings = 163840,
            .rope_theta = 10000.0,
            .norm_topk_prob = false,
            .mla = {.q_lora_rank = 0,
                    .kv_lora_rank = 512,
                    .qk_nope_head_dim = 128,
                    .qk_rope_head_dim = 64,
                    .v_head_dim = 128},
            .n_dense_layers = 1,
            .dense_ffn_dim = 10944,
            .yarn_factor = 40.0,
            .yarn_original_context = 4096,
            .yarn_mscale = 0.707};
}

SyntheticModelSpec synthetic_preset(const std::string& name) {
    using A = SyntheticArch;
    // {name, arch, vocab, hidden, layers, heads, kv heads, head_dim, experts, top-k, expert ffn,
    //  shared ffn, max positions, rope theta, norm_topk_prob}
    const SyntheticModelSpec presets[] = {
        {"mixtral-8x7b", A::Mixtral, 32000, 4096, 32, 32, 8, 128, 8, 2, 14336, 0, 32768, 1e6, true},
        {"qwen3-30b-a3b", A::Qwen3Moe, 151936, 2048, 48, 32, 4, 128, 128, 8, 768, 0, 40960, 1e6,
         true},
        {"qwen2-57b-a14b", A::Qwen2Moe, 151936, 3584, 28, 28, 4, 128, 64, 8, 2560, 20480, 32768,
         1e6, false},
        {"olmoe-1b-7b", A::Olmoe, 50304, 2048, 16, 16, 16, 128, 64, 8, 1024, 0, 4096, 1e4, false},
        {"qwen1.5-moe-a2.7b", A::Qwen2Moe, 151936, 2048, 24, 16, 16, 128, 60, 4, 1408, 5632, 8192,
         1e6, false},
        deepseek_v2_lite(),
        glm_4_5_air(),
        gpt_oss("gpt-oss-20b", 24, 32),
        gpt_oss("gpt-oss-120b", 36, 128),
    };
    std::string known;
    for (const SyntheticModelSpec& p : presets) {
        if (p.name == name) return p;
        known += (known.empty() ? "" : ", ") + p.name;
    }
    fail("synthetic model '", name, "' is not one of: ", known);
}

int64_t synthetic_parameter_count(const SyntheticModelSpec& spec) {
    int64_t n = 0;
    for (const PlannedTensor& t : hf_tensors(spec, DType::BF16))
        n += numel(t.shape);
    return n;
}

int64_t write_synthetic_safetensors(const std::string& dir, const SyntheticModelSpec& spec,
                                    DType dtype) {
    if (!is_float_weight_type(dtype))
        fail("safetensors holds f32, f16 or bf16 weights, not ", dtype_name(dtype),
             ": write GGUF for quantized types");
    fs::create_directories(dir);
    write_json(fs::path(dir) / "config.json", hf_config(spec, dtype));
    write_json(fs::path(dir) / "generation_config.json",
               {{"bos_token_id", 1}, {"eos_token_id", 2}});
    const std::vector<PlannedTensor> tensors = hf_tensors(spec, dtype);
    nlohmann::ordered_json header;
    header["__metadata__"] = {{"format", "pt"}, {"generator", "tandem synthetic " + spec.name}};
    int64_t offset = 0;
    for (const PlannedTensor& t : tensors) {
        header[t.name] = {{"dtype", std::string(dtype_safetensors_name(t.dtype))},
                          {"shape", t.shape},
                          {"data_offsets", {offset, offset + tensor_bytes(t)}}};
        offset += tensor_bytes(t);
    }
    std::string text = header.dump();
    text.append((8 - text.size() % 8) % 8, ' ');
    const std::string path = (fs::path(dir) / "model.safetensors").string();
    std::ofstream out(path, std::ios::binary);
    if (!out) fail(path, ": cannot create");
    const uint64_t header_size = text.size();
    out.write(reinterpret_cast<const char*>(&header_size), 8);
    out.write(text.data(), std::streamsize(text.size()));
    write_tensor_data(out, tensors, spec.seed, 1, path);
    out.close();
    if (!out) fail(path, ": write failed");
    return 8 + int64_t(text.size()) + offset;
}

int64_t write_synthetic_gguf(const std::string& path, const SyntheticModelSpec& spec, DType dtype) {
    if (!is_weight_type(dtype)) fail("GGUF weights cannot be ", dtype_name(dtype));
    const std::vector<PlannedTensor> tensors = gguf_tensors(spec, dtype);
    constexpr int64_t kAlignment = 32;  // GGUF's default general.alignment
    GgufHeader meta;
    gguf_metadata(meta, spec);
    GgufHeader infos;
    int64_t offset = 0;
    for (const PlannedTensor& t : tensors) {
        infos.str(t.name);
        infos.u32(uint32_t(t.shape.size()));
        for (auto it = t.shape.rbegin(); it != t.shape.rend(); ++it)  // ggml: innermost first
            infos.u64(uint64_t(*it));
        infos.u32(ggml_type_from_dtype(t.dtype));
        infos.u64(uint64_t(offset));
        offset += (tensor_bytes(t) + kAlignment - 1) / kAlignment * kAlignment;
    }
    GgufHeader head;
    head.raw("GGUF", 4);
    head.u32(3);
    head.u64(tensors.size());
    head.u64(meta.n_kv);
    std::string text = head.bytes + meta.bytes + infos.bytes;
    text.append(size_t((kAlignment - int64_t(text.size()) % kAlignment) % kAlignment), '\0');
    if (const fs::path parent = fs::path(path).parent_path(); !parent.empty())
        fs::create_directories(parent);
    std::ofstream out(path, std::ios::binary);
    if (!out) fail(path, ": cannot create");
    out.write(text.data(), std::streamsize(text.size()));
    write_tensor_data(out, tensors, spec.seed, kAlignment, path);
    out.close();
    if (!out) fail(path, ": write failed");
    return int64_t(text.size()) + offset;
}

}  // namespace tandem

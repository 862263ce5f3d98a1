#include "models/gguf_loader.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <regex>

#include "kernels/buffer.h"
#include "kernels/error.h"
#include "models/architectures/architectures.h"

namespace tandem {

namespace {

using Json = nlohmann::json;

struct GgufArchitecture {
    const char* gguf;     // general.architecture
    const char* hf;       // the architectures entry of an equivalent config.json; nullptr: none
    const char* hf_moe;   // the same when {arch}.expert_count > 0 (llama -> Mixtral)
    bool permuted_qk;     // llama.cpp's converter permuted q/k rows for interleaved RoPE
    bool norm_topk_prob;  // what llama.cpp does when {arch}.expert_weights_norm is absent
};

// llama.cpp runs llama with "normal" (interleaved pair) RoPE, so convert_hf_to_gguf.py permutes
// the q and k rows of llama checkpoints; the qwen and olmoe families use NeoX RoPE, which is
// Hugging Face's rotate-half, and are stored unpermuted. deepseek2 uses llama.cpp's interleaved
// RoPE too, but DeepSeek's own rotary pairs are interleaved already, so its converter permutes
// nothing; glm4moe is NeoX (rotate-half) and unpermuted as well. llama.cpp's MoE graphs renormalise
// the top-k weights for Mixtral and Qwen3-MoE and not for Qwen2-MoE and OLMoE. deepseek2 is V2 or
// V3 by its router (deepseek2_config).
const GgufArchitecture kArchitectures[] = {
    {"llama", "LlamaForCausalLM", "MixtralForCausalLM", true, true},
    {"qwen2", "Qwen2ForCausalLM", nullptr, false, false},
    {"qwen2moe", "Qwen2MoeForCausalLM", "Qwen2MoeForCausalLM", false, false},
    {"qwen3moe", "Qwen3MoeForCausalLM", "Qwen3MoeForCausalLM", false, true},
    {"olmoe", "OlmoeForCausalLM", "OlmoeForCausalLM", false, false},
    {"deepseek2", nullptr, "DeepseekV2ForCausalLM", false, false},
    {"glm4moe", nullptr, "Glm4MoeForCausalLM", false, true},
    {"gpt-oss", nullptr, "GptOssForCausalLM", false, true},
};

const GgufArchitecture& find_architecture(const GgufModelFiles& files) {
    const std::string name = files.get_string("general.architecture");
    for (const GgufArchitecture& a : kArchitectures)
        if (name == a.gguf) return a;
    std::string known;
    for (const GgufArchitecture& a : kArchitectures)
        known += (known.empty() ? "" : ", ") + std::string(a.gguf);
    fail(files.path(), ": metadata general.architecture: '", name,
         "' is not supported (supported: ", known, ")");
}

bool is_moe(const GgufModelFiles& files, const std::string& arch) {
    return files.get_uint_opt(arch + ".expert_count").value_or(0) > 0;
}

// The dimension `index` (outermost first) of a tensor, or nullopt when the tensor is absent.
std::optional<int64_t> tensor_dim(const GgufModelFiles& files, const std::string& name,
                                  size_t index) {
    const GgufTensor* t = files.find(name);
    if (t == nullptr || t->shape.size() <= index) return std::nullopt;
    return t->shape[index];
}

// Layers whose FFN is a dense SwiGLU: those without a router tensor.
std::vector<int64_t> dense_layers(const GgufModelFiles& files, int64_t n_layers) {
    std::vector<int64_t> dense;
    for (int64_t l = 0; l < n_layers; ++l)
        if (files.find(cat("blk.", l, ".ffn_gate_inp.weight")) == nullptr) dense.push_back(l);
    return dense;
}

Json rope_scaling(const GgufModelFiles& files, const std::string& arch) {
    const std::string type = files.get_string_opt(arch + ".rope.scaling.type").value_or("none");
    if (type == "none") return nullptr;
    const std::string key = arch + ".rope.scaling.factor";
    if (type == "linear") return {{"rope_type", "linear"}, {"factor", files.get_float(key)}};
    if (type == "yarn") {
        Json yarn = {{"rope_type", "yarn"}, {"factor", files.get_float(key)}};
        if (auto original = files.get_uint_opt(arch + ".rope.scaling.original_context_length"))
            yarn["original_max_position_embeddings"] = *original;
        // llama.cpp's defaults are transformers' (32 and 1), so absent keys may stay absent.
        if (auto beta = files.get_float_opt(arch + ".rope.scaling.yarn_beta_fast"))
            yarn["beta_fast"] = *beta;
        if (auto beta = files.get_float_opt(arch + ".rope.scaling.yarn_beta_slow"))
            yarn["beta_slow"] = *beta;
        return yarn;
    }
    fail(files.path(), ": metadata ", arch, ".rope.scaling.type: '", type,
         "' is not supported (supported: none, linear, yarn)");
}

// deepseek2, as llama.cpp's DeepseekV2Model converter writes DeepSeek-V2 and V3, into the keys of
// DeepseekV2Config / DeepseekV3Config. Two generations of files exist. Before llama.cpp's MLA
// support, key_length / value_length are a head's qk and v widths and kv_b is one tensor. Since,
// key_length / value_length describe the latent row (kv_lora_rank + rope, kv_lora_rank), the head
// widths are key_length_mla / value_length_mla, head_count_kv is 1, and kv_b is split into k_b
// and v_b (read in place, see MlaWeights). Absent router keys mean what llama.cpp assumes:
// softmax, no renormalisation, no scaling, no groups.
void deepseek2_config(const GgufModelFiles& files, Json& c) {
    const auto key = [](const std::string& k) { return "deepseek2." + k; };
    const int64_t n_layers = c["num_hidden_layers"];
    c["num_key_value_heads"] = c["num_attention_heads"];  // every head has keys once up-projected
    const auto q_lora = files.get_uint_opt(key("attention.q_lora_rank"));
    c["q_lora_rank"] = q_lora ? Json(*q_lora) : Json(nullptr);  // null: a full q_proj
    c["kv_lora_rank"] = files.get_uint(key("attention.kv_lora_rank"));
    const uint64_t rope = files.get_uint(key("rope.dimension_count"));
    const bool split_era = files.has(key("attention.key_length_mla"));
    const std::string qk_key = key(split_era ? "attention.key_length_mla" : "attention.key_length");
    const uint64_t qk = files.get_uint(qk_key);
    if (qk <= rope)
        fail(files.path(), ": metadata ", qk_key, ": ", qk, " leaves no room beside ", rope,
             " rotary dims (", key("rope.dimension_count"), ")");
    c["qk_nope_head_dim"] = qk - rope;
    c["qk_rope_head_dim"] = rope;
    c["v_head_dim"] =
        files.get_uint(key(split_era ? "attention.value_length_mla" : "attention.value_length"));
    c["rope_interleave"] = true;
    c["attention_bias"] = false;

    c["intermediate_size"] = files.get_uint(key("feed_forward_length"));
    c["n_routed_experts"] = files.get_uint(key("expert_count"));
    c["num_experts_per_tok"] = files.get_uint(key("expert_used_count"));
    c["moe_intermediate_size"] = files.get_uint(key("expert_feed_forward_length"));
    c["n_shared_experts"] = files.get_uint_opt(key("expert_shared_count")).value_or(0);
    int64_t first_moe = 0;  // first_k_dense_replace; else the leading layers without a router
    if (auto lead = files.get_uint_opt(key("leading_dense_block_count"))) {
        first_moe = int64_t(std::min<uint64_t>(*lead, uint64_t(n_layers)));
    } else {
        while (first_moe < n_layers &&
               files.find(cat("blk.", first_moe, ".ffn_gate_inp.weight")) == nullptr)
            ++first_moe;
    }
    c["first_k_dense_replace"] = first_moe;
    c["moe_layer_freq"] = 1;
    c["routed_scaling_factor"] = files.get_float_opt(key("expert_weights_scale")).value_or(1.0);
    c["norm_topk_prob"] = files.get_bool_opt(key("expert_weights_norm")).value_or(false);

    const uint64_t gating = files.get_uint_opt(key("expert_gating_func")).value_or(1);
    const uint64_t groups = files.get_uint_opt(key("expert_group_count")).value_or(1);
    const uint64_t groups_used =
        files.get_uint_opt(key("expert_group_used_count")).value_or(groups);
    const std::string bias = cat("blk.", first_moe, ".exp_probs_b.bias");
    const bool has_bias = files.find(bias) != nullptr;
    if (gating == 2) {  // sigmoid + selection bias: DeepSeek-V3's noaux_tc router
        if (!has_bias)
            fail(files.path(), ": missing tensor ", bias, " (", key("expert_gating_func"),
                 " 2, sigmoid, is supported with DeepSeek-V3's selection bias only)");
        c["architectures"] = {"DeepseekV3ForCausalLM"};
        c["scoring_func"] = "sigmoid";
        c["topk_method"] = "noaux_tc";
        c["n_group"] = groups;
        c["topk_group"] = groups_used;
    } else if (gating == 1) {  // softmax: DeepSeek-V2's router, grouped when the file says so
        if (has_bias)
            fail(files.path(), ": tensor ", bias,
                 ": a selection bias with softmax routing is not supported");
        c["architectures"] = {"DeepseekV2ForCausalLM"};
        c["scoring_func"] = "softmax";
        // llama.cpp renormalises and then scales; DeepSeek's V2 code (which Tandem follows for
        // norm_topk_prob) renormalises instead of scaling. They agree only at scale 1.
        if (c["norm_topk_prob"] == true && c["routed_scaling_factor"] != 1.0)
            fail(files.path(), ": metadata ", key("expert_weights_norm"), " true with ",
                 key("expert_weights_scale"), " ", c["routed_scaling_factor"].dump(),
                 " is not supported for softmax routing (llama.cpp scales after renormalising, "
                 "DeepSeek-V2's code does not)");
        const bool grouped = groups > 1 && groups_used < groups;
        c["topk_method"] = grouped ? "group_limited_greedy" : "greedy";
        if (grouped) {
            c["n_group"] = groups;
            c["topk_group"] = groups_used;
        }
    } else {
        fail(files.path(), ": metadata ", key("expert_gating_func"), ": ", gating,
             " is not supported (1 softmax, 2 sigmoid)");
    }

    // YaRN as llama.cpp's deepseek2 graph computes it: cos and sin unscaled (it divides out the
    // attention factor ggml applies), and the softmax scaled by mscale(factor, mscale_all_dim)^2
    // with yarn_log_multiplier = 0.1 * mscale_all_dim. That is transformers' result when mscale
    // equals mscale_all_dim, as in every DeepSeek config; a file cannot say otherwise.
    if (Json& yarn = c["rope_scaling"]; yarn.is_object() && yarn["rope_type"] == "yarn") {
        const std::string attn = key("rope.scaling.attn_factor");
        if (auto f = files.get_float_opt(attn); f && std::fabs(*f - 1.0) > 1e-6)
            fail(files.path(), ": metadata ", attn, ": ", *f, " is not supported (only 1)");
        yarn["attention_factor"] = 1.0;
        yarn["mscale_all_dim"] =
            files.get_float_opt(key("rope.scaling.yarn_log_multiplier")).value_or(0.0) / 0.1;
    }
}

// glm4moe, as llama.cpp's Glm4MoeModel converter writes GLM-4.5/4.6, into Glm4MoeConfig's keys:
// DeepSeek-V3's router (sigmoid scores with exp_probs_b, groups, renormalisation, scaling).
void glm4moe_config(const GgufModelFiles& files, Json& c) {
    const auto key = [](const std::string& k) { return "glm4moe." + k; };
    const int64_t n_layers = c["num_hidden_layers"];
    c["n_routed_experts"] = c["num_local_experts"];
    c["n_shared_experts"] = files.get_uint_opt(key("expert_shared_count")).value_or(0);
    c["use_qk_norm"] = files.find("blk.0.attn_q_norm.weight") != nullptr;
    const std::vector<int64_t> dense = c["mlp_only_layers"];
    int64_t first_moe = 0;  // the leading layers without a router, unless the file says
    while (first_moe < n_layers && std::find(dense.begin(), dense.end(), first_moe) != dense.end())
        ++first_moe;
    c["first_k_dense_replace"] =
        files.get_uint_opt(key("leading_dense_block_count")).value_or(uint64_t(first_moe));
    c["routed_scaling_factor"] = files.get_float_opt(key("expert_weights_scale")).value_or(1.0);
    c["n_group"] = files.get_uint_opt(key("expert_group_count")).value_or(1);
    c["topk_group"] = files.get_uint_opt(key("expert_group_used_count")).value_or(c["n_group"]);
    if (const uint64_t gating = files.get_uint_opt(key("expert_gating_func")).value_or(2);
        gating != 2)
        fail(files.path(), ": metadata ", key("expert_gating_func"), ": ", gating,
             " is not supported (2, sigmoid)");
    const std::string bias = cat("blk.", first_moe, ".exp_probs_b.bias");
    if (first_moe < n_layers && files.find(bias) == nullptr)
        fail(files.path(), ": missing tensor ", bias, " (GLM's sigmoid router needs it)");
}

// gpt-oss, as llama.cpp's GptOssModel converter writes it, into GptOssConfig's keys. The
// clamped SwiGLU's limit and alpha are not in the file (llama.cpp hard-codes the Hub's 7.0 and
// 1.702, which are GptOssConfig's defaults too). Sliding layers: every
// attention.sliding_window_pattern-th layer is full, the others slide (llama.cpp's default 2:
// even layers slide, as transformers' default layer_types). YaRN without truncated ramp ends,
// as the Hub's config says (llama.cpp truncates; transformers, the reference here, does not).
void gpt_oss_config(const GgufModelFiles& files, Json& c) {
    const auto key = [](const std::string& k) { return "gpt-oss." + k; };
    const int64_t n_layers = c["num_hidden_layers"];
    c["intermediate_size"] = c["moe_intermediate_size"];
    c["attention_bias"] = true;
    if (!c.contains("sliding_window"))
        fail(files.path(), ": metadata ", key("attention.sliding_window"), " missing");
    const uint64_t period = files.get_uint_opt(key("attention.sliding_window_pattern")).value_or(2);
    if (period == 0)
        fail(files.path(), ": metadata ", key("attention.sliding_window_pattern"), ": 0");
    Json types = Json::array();
    for (int64_t l = 0; l < n_layers; ++l)
        types.push_back(uint64_t(l) % period < period - 1 ? "sliding_attention" : "full_attention");
    c["layer_types"] = types;
    if (c["rope_scaling"].is_object()) c["rope_scaling"]["truncate"] = false;
    if (c["norm_topk_prob"] != true)
        fail(files.path(), ": metadata ", key("expert_weights_norm"),
             ": gpt-oss softmaxes its top-k logits (renormalised weights), not false");
}

}  // namespace

std::vector<std::string> supported_gguf_architectures() {
    std::vector<std::string> names;
    for (const GgufArchitecture& a : kArchitectures)
        names.emplace_back(a.gguf);
    return names;
}

Json gguf_model_config(const GgufModelFiles& files) {
    const GgufArchitecture& a = find_architecture(files);
    const std::string arch = a.gguf;
    const bool moe = is_moe(files, arch);
    if (moe && a.hf_moe == nullptr)
        fail(files.path(), ": metadata ", arch, ".expert_count: ", arch, " has no experts");
    if (!moe && a.hf == nullptr)
        fail(files.path(), ": metadata ", arch, ".expert_count: missing or 0; Tandem runs ", arch,
             " with experts only");
    const auto uint = [&](const std::string& key) { return files.get_uint(arch + "." + key); };
    const auto uint_opt = [&](const std::string& key) {
        return files.get_uint_opt(arch + "." + key);
    };

    Json c;
    c["architectures"] = {moe ? a.hf_moe : a.hf};
    const auto vocab = tensor_dim(files, "token_embd.weight", 0);
    if (!vocab) fail(files.path(), ": missing tensor token_embd.weight");
    c["vocab_size"] = *vocab;
    c["hidden_size"] = uint("embedding_length");
    // GLM's converter counts its next-token (MTP) blocks, stored after the decoder's, in
    // block_count; they are not decoder layers (ViewBuilder skips their tensors).
    const uint64_t blocks = uint("block_count");
    const uint64_t mtp = uint_opt("nextn_predict_layers").value_or(0);
    if (mtp >= blocks)
        fail(files.path(), ": metadata ", arch, ".nextn_predict_layers: ", mtp, " of ", blocks,
             " blocks leaves no decoder layer");
    c["num_hidden_layers"] = blocks - mtp;
    if (mtp > 0) c["num_nextn_predict_layers"] = mtp;
    // Every layer has tensors of its own: a larger count is a lie, and it would be looped over.
    if (c["num_hidden_layers"].get<uint64_t>() > files.tensors().size())
        fail(files.path(), ": metadata ", arch, ".block_count: ", c["num_hidden_layers"].dump(),
             " layers, but the file holds ", files.tensors().size(), " tensors");
    c["num_attention_heads"] = uint("attention.head_count");
    if (const GgufValue* kv = files.value(arch + ".attention.head_count_kv");
        kv != nullptr && kv->type == GgufValueType::Array)
        fail(files.path(), ": metadata ", arch,
             ".attention.head_count_kv: per-layer KV head counts are not supported");
    c["max_position_embeddings"] = uint("context_length");
    c["rms_norm_eps"] = files.get_float(arch + ".attention.layer_norm_rms_epsilon");
    c["rope_theta"] = files.get_float_opt(arch + ".rope.freq_base").value_or(10000.0);
    c["rope_scaling"] = rope_scaling(files, arch);
    if (const GgufTensor* factors = files.find("rope_freqs.weight")) {
        if (factors->dtype != DType::F32 || factors->shape.size() != 1)
            fail(files.path(), ": tensor rope_freqs.weight: expected a 1-D f32 tensor");
        std::vector<float> values(size_t(factors->shape[0]));
        std::memcpy(values.data(), factors->data, values.size() * sizeof(float));
        c["rope_freq_factors"] = values;
    }
    c["tie_word_embeddings"] = files.find("output.weight") == nullptr;
    if (arch == "deepseek2") {
        deepseek2_config(files, c);
        return c;
    }

    c["num_key_value_heads"] =
        uint_opt("attention.head_count_kv").value_or(c["num_attention_heads"].get<uint64_t>());
    const auto key_length = uint_opt("attention.key_length");
    if (key_length) {
        if (uint_opt("attention.value_length").value_or(*key_length) != *key_length)
            fail(files.path(), ": metadata ", arch,
                 ".attention.value_length differs from key_length (not supported)");
        c["head_dim"] = *key_length;
    }
    const uint64_t head_dim = key_length.value_or(c["hidden_size"].get<uint64_t>() /
                                                  std::max<uint64_t>(1, c["num_attention_heads"]));
    if (auto rotary = uint_opt("rope.dimension_count"); rotary && head_dim > 0)
        c["partial_rotary_factor"] = double(*rotary) / double(head_dim);
    const bool qkv_bias = files.find("blk.0.attn_q.bias") != nullptr;
    c["attention_bias"] = qkv_bias;
    c["qkv_bias"] = qkv_bias;
    if (auto ffn = uint_opt("feed_forward_length")) c["intermediate_size"] = *ffn;
    if (auto window = uint_opt("attention.sliding_window")) c["sliding_window"] = *window;
    if (auto clamp = files.get_float_opt(arch + ".attention.clamp_kqv")) c["clip_qkv"] = *clamp;

    if (moe) {
        c["num_experts"] = c["num_local_experts"] = uint("expert_count");
        c["num_experts_per_tok"] = uint("expert_used_count");
        c["norm_topk_prob"] =
            files.get_bool_opt(arch + ".expert_weights_norm").value_or(a.norm_topk_prob);
        c["mlp_only_layers"] = dense_layers(files, c["num_hidden_layers"].get<int64_t>());
        c["decoder_sparse_step"] = 1;
        // Expert and shared-expert widths: from the keys, else from the first MoE layer's tensors.
        std::optional<int64_t> expert_ffn;
        if (auto v = uint_opt("expert_feed_forward_length")) expert_ffn = int64_t(*v);
        for (int64_t l = 0; !expert_ffn && l < c["num_hidden_layers"].get<int64_t>(); ++l) {
            expert_ffn = tensor_dim(files, cat("blk.", l, ".ffn_gate_exps.weight"), 1);
            if (auto fused = tensor_dim(files, cat("blk.", l, ".ffn_gate_up_exps.weight"), 1);
                !expert_ffn && fused)
                expert_ffn = *fused / 2;
            if (!expert_ffn)
                expert_ffn = tensor_dim(files, cat("blk.", l, ".ffn_gate.0.weight"), 0);
        }
        if (!expert_ffn)
            fail(files.path(), ": metadata ", arch, ".expert_feed_forward_length missing");
        c["moe_intermediate_size"] = *expert_ffn;
        const std::string hf_moe = a.hf_moe;
        if (hf_moe == "MixtralForCausalLM" || hf_moe == "OlmoeForCausalLM")
            c["intermediate_size"] = *expert_ffn;  // their experts are intermediate_size wide
        std::optional<int64_t> shared;
        if (auto v = uint_opt("expert_shared_feed_forward_length")) shared = int64_t(*v);
        for (int64_t l = 0; !shared && l < c["num_hidden_layers"].get<int64_t>(); ++l)
            shared = tensor_dim(files, cat("blk.", l, ".ffn_gate_shexp.weight"), 0);
        if (shared) c["shared_expert_intermediate_size"] = *shared;
        if (arch == "glm4moe") glm4moe_config(files, c);
        if (arch == "gpt-oss") gpt_oss_config(files, c);
    }
    return c;
}

namespace {

// Where the decoder's Hugging Face names point into the GGUF file, plus the storage of the q/k
// rows put back in Hugging Face order.
struct GgufStorage {
    GgufModelFiles files;
    std::vector<Buffer> buffers;
};

class ViewBuilder {
  public:
    ViewBuilder(GgufStorage& storage, const Json& config, bool permuted_qk)
        : storage_(storage),
          config_(config),
          permuted_qk_(permuted_qk),
          deepseek_names_(config["architectures"][0].get<std::string>().starts_with("Deepseek") ||
                          config["architectures"][0] == "Glm4MoeForCausalLM"),
          gpt_oss_(config["architectures"][0] == "GptOssForCausalLM"),
          n_layers_(config["num_hidden_layers"].get<int64_t>()),
          mtp_(config.contains("num_nextn_predict_layers")) {}

    std::map<std::string, Checkpoint::View> build() {
        const GgufModelFiles& files = storage_.files;
        const bool mixtral = config_["architectures"][0] == "MixtralForCausalLM";
        const std::string moe = mixtral ? "block_sparse_moe." : "mlp.";
        static const std::regex layer_name(R"(blk\.(\d{1,9})\.(.+))");
        for (const GgufTensor* t : files.tensors()) {
            std::smatch m;
            if (t->name == "token_embd.weight") {
                add("model.embed_tokens.weight", *t);
            } else if (t->name == "output_norm.weight") {
                add("model.norm.weight", *t);
            } else if (t->name == "output.weight") {
                add("lm_head.weight", *t);
            } else if (std::regex_match(t->name, m, layer_name)) {
                const int64_t layer = std::stoll(m[1].str());
                if (mtp_ && layer >= n_layers_) continue;  // a next-token (MTP) block
                layer_tensor(layer, m[2].str(), *t, mixtral, moe);
            } else if (t->name != "rope_freqs.weight") {  // rope_freqs went into the config
                unknown(*t);
            }
        }
        return std::move(views_);
    }

  private:
    void layer_tensor(int64_t layer, const std::string& suffix, const GgufTensor& t, bool mixtral,
                      const std::string& moe) {
        const std::string p = cat("model.layers.", layer, ".");
        // DeepSeek's names (k_b_proj and v_b_proj: see bind_mla); a file of another
        // architecture with these tensors is refused below instead of half-used.
        static const std::map<std::string, std::string, std::less<>> deepseek = {
            {"attn_q_a.weight", "self_attn.q_a_proj.weight"},
            {"attn_q_a_norm.weight", "self_attn.q_a_layernorm.weight"},
            {"attn_q_b.weight", "self_attn.q_b_proj.weight"},
            {"attn_kv_a_mqa.weight", "self_attn.kv_a_proj_with_mqa.weight"},
            {"attn_kv_a_norm.weight", "self_attn.kv_a_layernorm.weight"},
            {"attn_kv_b.weight", "self_attn.kv_b_proj.weight"},
            {"attn_k_b.weight", "self_attn.k_b_proj.weight"},
            {"attn_v_b.weight", "self_attn.v_b_proj.weight"},
            {"exp_probs_b.bias", "mlp.gate.e_score_correction_bias"},
            {"ffn_gate_shexp.weight", "mlp.shared_experts.gate_proj.weight"},
            {"ffn_up_shexp.weight", "mlp.shared_experts.up_proj.weight"},
            {"ffn_down_shexp.weight", "mlp.shared_experts.down_proj.weight"},
        };
        if (deepseek_names_)
            if (auto it = deepseek.find(suffix); it != deepseek.end())
                return add(p + it->second, t);
        static const std::map<std::string, std::string, std::less<>> simple = {
            {"attn_norm.weight", "input_layernorm.weight"},
            {"ffn_norm.weight", "post_attention_layernorm.weight"},
            {"post_attention_norm.weight", "post_attention_layernorm.weight"},  // glm4moe
            {"attn_v.weight", "self_attn.v_proj.weight"},
            {"attn_v.bias", "self_attn.v_proj.bias"},
            {"attn_output.weight", "self_attn.o_proj.weight"},
            {"attn_output.bias", "self_attn.o_proj.bias"},
            {"attn_q_norm.weight", "self_attn.q_norm.weight"},
            {"attn_k_norm.weight", "self_attn.k_norm.weight"},
            {"ffn_gate.weight", "mlp.gate_proj.weight"},
            {"ffn_up.weight", "mlp.up_proj.weight"},
            {"ffn_down.weight", "mlp.down_proj.weight"},
            {"ffn_gate_shexp.weight", "mlp.shared_expert.gate_proj.weight"},
            {"ffn_up_shexp.weight", "mlp.shared_expert.up_proj.weight"},
            {"ffn_down_shexp.weight", "mlp.shared_expert.down_proj.weight"},
        };
        if (auto it = simple.find(suffix); it != simple.end()) return add(p + it->second, t);
        const int64_t heads = config_["num_attention_heads"];
        const int64_t kv_heads = config_["num_key_value_heads"];
        if (suffix == "attn_q.weight" || suffix == "attn_q.bias" || suffix == "attn_k.weight" ||
            suffix == "attn_k.bias") {
            const bool q = suffix[5] == 'q';
            const std::string name =
                p + "self_attn." + (q ? "q" : "k") + "_proj." + suffix.substr(suffix.find('.') + 1);
            return permuted_qk_ ? add_unpermuted(name, t, q ? heads : kv_heads) : add(name, t);
        }
        if (gpt_oss_) {  // its router and biases under transformers' GptOss names
            static const std::map<std::string, std::string, std::less<>> gpt_oss = {
                {"ffn_gate_inp.weight", "mlp.router.weight"},
                {"ffn_gate_inp.bias", "mlp.router.bias"},
                {"attn_sinks.weight", "self_attn.sinks"},
            };
            if (auto it = gpt_oss.find(suffix); it != gpt_oss.end()) return add(p + it->second, t);
            const auto bias_name = [&](int64_t e, const std::string& proj) {
                return cat(p, "mlp.experts.", e, ".", proj, ".bias");
            };
            if (suffix == "ffn_gate_exps.bias") return add_expert_biases(t, bias_name, "gate_proj");
            if (suffix == "ffn_up_exps.bias") return add_expert_biases(t, bias_name, "up_proj");
            if (suffix == "ffn_down_exps.bias") return add_expert_biases(t, bias_name, "down_proj");
        }
        if (suffix == "ffn_gate_inp.weight") return add(p + moe + "gate.weight", t);
        if (suffix == "ffn_gate_inp_shexp.weight") {
            // llama.cpp stores the shared expert's gate as a vector; transformers as [1, hidden].
            return add(p + "mlp.shared_expert_gate.weight", t,
                       std::vector<int64_t>{1, t.shape.back()});
        }
        const std::string gate = mixtral ? "w1" : "gate_proj", up = mixtral ? "w3" : "up_proj",
                          down = mixtral ? "w2" : "down_proj";
        auto expert_name = [&](int64_t e, const std::string& proj) {
            return cat(p, moe, "experts.", e, ".", proj, ".weight");
        };
        if (suffix == "ffn_gate_exps.weight") return add_experts(t, expert_name, gate, 0, 1);
        if (suffix == "ffn_up_exps.weight") return add_experts(t, expert_name, up, 0, 1);
        if (suffix == "ffn_down_exps.weight") return add_experts(t, expert_name, down, 0, 1);
        if (suffix == "ffn_gate_up_exps.weight") {  // fused: gate rows, then up rows
            add_experts(t, expert_name, gate, 0, 2);
            return add_experts(t, expert_name, up, 1, 2);
        }
        static const std::regex legacy(R"(ffn_(gate|up|down)\.(\d{1,9})\.weight)");  // old Mixtral
        std::smatch m;
        if (std::regex_match(suffix, m, legacy)) {
            const std::string which = m[1].str();
            return add(expert_name(std::stoll(m[2].str()), which == "gate" ? gate
                                                           : which == "up" ? up
                                                                           : down),
                       t);
        }
        unknown(t);
    }

    // A weight this loader has no place for: running without it would compute another model.
    [[noreturn]] void unknown(const GgufTensor& t) const {
        fail(storage_.files.path(), ": tensor ", t.name, ": not a weight of ",
             config_["architectures"][0].get<std::string>(),
             " that Tandem knows (another architecture, or a newer converter?)");
    }

    Checkpoint::View view_of(const GgufTensor& t, std::string origin) const {
        return {.origin = std::move(origin),
                .dtype = t.dtype,
                .dtype_name = ggml_type_name(t.ggml_type),
                .shape = t.shape,
                .data = t.data};
    }

    void add(const std::string& name, const GgufTensor& t,
             std::optional<std::vector<int64_t>> shape = std::nullopt) {
        Checkpoint::View v = view_of(t, cat(storage_.files.path(), ": tensor ", t.name));
        if (shape) v.shape = *shape;
        put(name, std::move(v));
    }

    void put(const std::string& name, Checkpoint::View v) {
        const std::string origin = v.origin;
        if (!views_.emplace(name, std::move(v)).second)
            fail(origin, ": a second tensor for ", name);
    }

    // Slices a 3-D [n_experts, rows, k] tensor into per-expert [rows / parts, k] matrices; `part`
    // selects which of `parts` consecutive row ranges (fused gate_up has two).
    template <class NameFn>
    void add_experts(const GgufTensor& t, NameFn&& expert_name, const std::string& proj,
                     int64_t part, int64_t parts) {
        const std::string origin = cat(storage_.files.path(), ": tensor ", t.name);
        if (t.shape.size() != 3 || t.shape[0] <= 0 || t.shape[1] % parts != 0)
            fail(origin, ": expected [n_experts, rows, k], found ", Json(t.shape).dump());
        const int64_t n_experts = t.shape[0], rows = t.shape[1] / parts;
        const uint64_t expert_bytes = t.bytes / uint64_t(n_experts);
        const uint64_t part_bytes = expert_bytes / uint64_t(parts);
        for (int64_t e = 0; e < n_experts; ++e) {
            Checkpoint::View v = view_of(t, cat(origin, " (expert ", e, ")"));
            v.shape = {rows, t.shape[2]};
            v.data = t.data + uint64_t(e) * expert_bytes + uint64_t(part) * part_bytes;
            put(expert_name(e, proj), std::move(v));
        }
    }

    // [n_experts, n] biases: one [n] view per expert.
    template <class NameFn>
    void add_expert_biases(const GgufTensor& t, NameFn&& bias_name, const std::string& proj) {
        const std::string origin = cat(storage_.files.path(), ": tensor ", t.name);
        if (t.shape.size() != 2 || t.shape[0] <= 0)
            fail(origin, ": expected [n_experts, n], found ", Json(t.shape).dump());
        const uint64_t expert_bytes = t.bytes / uint64_t(t.shape[0]);
        for (int64_t e = 0; e < t.shape[0]; ++e) {
            Checkpoint::View v = view_of(t, cat(origin, " (expert ", e, ")"));
            v.shape = {t.shape[1]};
            v.data = t.data + uint64_t(e) * expert_bytes;
            put(bias_name(e, proj), std::move(v));
        }
    }

    // convert_hf_to_gguf.py's LlamaModel.permute: within each head, HF row j * (d/2) + i becomes
    // row 2i + j. Rows are whole blocks of any type, so they move as bytes.
    void add_unpermuted(const std::string& name, const GgufTensor& t, int64_t n_heads) {
        const std::string origin = cat(storage_.files.path(), ": tensor ", t.name);
        const int64_t rows = t.shape.empty() ? 0 : t.shape[0];
        if (n_heads <= 0 || rows % (2 * n_heads) != 0)
            fail(origin, ": ", rows, " rows do not split into ", n_heads, " heads of pairs");
        const uint64_t row_bytes = rows == 0 ? 0 : t.bytes / uint64_t(rows);
        const int64_t head_dim = rows / n_heads, half = head_dim / 2;
        Buffer copy = allocate(Device::cpu(), size_t(t.bytes));
        auto* out = static_cast<std::byte*>(copy.data());
        for (int64_t h = 0; h < n_heads; ++h)
            for (int64_t j = 0; j < 2; ++j)
                for (int64_t i = 0; i < half; ++i)
                    std::memcpy(out + uint64_t(h * head_dim + j * half + i) * row_bytes,
                                t.data + uint64_t(h * head_dim + 2 * i + j) * row_bytes, row_bytes);
        Checkpoint::View v = view_of(t, origin);
        v.data = out;
        storage_.buffers.push_back(std::move(copy));
        put(name, std::move(v));
    }

    GgufStorage& storage_;
    const Json& config_;
    bool permuted_qk_;
    bool deepseek_names_;  // DeepSeek's or GLM's: shared_experts (plural), exp_probs_b
    bool gpt_oss_;         // router, sinks and expert biases under GptOss's names
    int64_t n_layers_;
    bool mtp_;  // blocks from n_layers_ on are next-token (MTP) layers, skipped
    std::map<std::string, Checkpoint::View> views_;
};

std::vector<int32_t> special_token_ids(const GgufModelFiles& files, const std::string& key) {
    std::vector<int32_t> ids;
    if (auto id = files.get_uint_opt(key)) {
        if (*id > uint64_t(INT32_MAX)) fail(files.path(), ": metadata ", key, ": ", *id);
        ids.push_back(int32_t(*id));
    }
    return ids;
}

}  // namespace

std::unique_ptr<Model> load_gguf_model(const std::string& path) {
    auto storage = std::make_shared<GgufStorage>(GgufStorage{GgufModelFiles::open(path), {}});
    const GgufModelFiles& files = storage->files;
    const GgufArchitecture& a = find_architecture(files);
    const Json json = gguf_model_config(files);

    ModelConfig config;
    config.architecture = json["architectures"][0];
    if (auto bos = special_token_ids(files, "tokenizer.ggml.bos_token_id"); !bos.empty())
        config.bos_token_id = bos[0];
    // Generation ends at EOS and, for chat models, at the end-of-turn token when it differs.
    for (const char* key : {"tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id"})
        for (int32_t id : special_token_ids(files, key))
            if (std::find(config.eos_token_ids.begin(), config.eos_token_ids.end(), id) ==
                config.eos_token_ids.end())
                config.eos_token_ids.push_back(id);

    std::map<std::string, Checkpoint::View> views =
        ViewBuilder(*storage, json, a.permuted_qk).build();
    Checkpoint checkpoint = Checkpoint::from_views(path, std::move(views), storage);
    const ConfigReader reader(json, path + " (metadata as config.json)");
    const ArchitectureFactory factory = find_architecture_factory(config.architecture);
    if (factory == nullptr) fail(path, ": no factory for ", config.architecture);
    return factory(reader, std::move(config), std::move(checkpoint));
}

}  // namespace tandem

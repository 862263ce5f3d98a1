// GptOssForCausalLM (gpt-oss-20b, gpt-oss-120b), as transformers 5.25's modeling_gpt_oss.py:
// grouped-query attention with biases on q, k, v and o and a learned sink logit per query head
// in each softmax's denominator; layers alternating between a sliding window (sliding_window,
// 128) and full attention (layer_types, else even layers sliding as transformers' default);
// YaRN RoPE; every layer MoE, with a biased router whose top-k logits are softmaxed (the same as
// renormalising the top-k of a full softmax, which is how the shared router computes it), and
// experts with biases on gate, up and down and the clamped SwiGLU (swiglu_limit, swiglu_alpha).
//
// Hugging Face stores the experts fused per layer, in one of two layouts:
//   float: mlp.experts.gate_up_proj [n_experts, hidden, 2 * ffn] (x @ W, gate and up
//          interleaved along the last dim: column 2i is gate row i, 2i + 1 up row i),
//          mlp.experts.down_proj [n_experts, ffn, hidden];
//   MXFP4: gate_up_proj_blocks [n_experts, 2 * ffn, hidden / 32, 16] and _scales
//          [n_experts, 2 * ffn, hidden / 32] (u8; rows interleaved the same way), down_proj_blocks
//          / _scales likewise with rows of hidden; two e2m1 values per byte, element 2i in the
//          low nibble of byte i (transformers' convert_moe_packed_tensors).
// Both are repacked here, once at load, into the per-expert row-major gate / up / down matrices
// the shared decoder binds (MXFP4 into Tandem's GGUF block layout, kernels/cpu/quant.h); the
// interleaved biases are split the same way. So unlike the other architectures the experts of a
// safetensors gpt-oss are a copy, not a view of the mapped file (GGUF's are read in place).
#include <cstring>

#include "kernels/cpu/linear.h"
#include "kernels/cpu/quant.h"
#include "kernels/error.h"
#include "models/architectures/architectures.h"
#include "models/decoder.h"

namespace tandem {

namespace {

struct RepackedStorage {
    Checkpoint source;
    std::vector<Buffer> buffers;
};

// Builds the checkpoint the decoder binds: the source's tensors passed through, or replaced by
// repacked copies that the returned checkpoint owns (with the source, which stays mapped).
class Repacker {
  public:
    explicit Repacker(Checkpoint source)
        : storage_(std::make_shared<RepackedStorage>(RepackedStorage{std::move(source), {}})) {}

    const Checkpoint& source() const { return storage_->source; }

    // The stored tensor `name`, checked to have `shape` and a dtype among `dtypes` (safetensors
    // names: "U8", "BF16", ...).
    const Checkpoint::View& stored(const std::string& name, const std::vector<int64_t>& shape,
                                   std::initializer_list<std::string_view> dtypes) const {
        const Checkpoint::View* v = source().stored(name);
        if (v == nullptr)
            fail(source().dir(), ": missing tensor ", name, " (expected ", Shape::from(shape).str(),
                 ")");
        bool dtype_ok = false;
        for (std::string_view d : dtypes)
            dtype_ok = dtype_ok || v->dtype_name == d;
        if (v->shape != shape || !dtype_ok) {
            std::string want;
            for (std::string_view d : dtypes)
                want += want.empty() ? std::string(d) : "|" + std::string(d);
            fail(v->origin, ": expected ", Shape::from(shape).str(), " ", want, ", found ",
                 Shape::from(v->shape).str(), " ", v->dtype_name);
        }
        consumed_.insert(name);
        return *v;
    }

    // A new tensor `name` that the caller fills through the returned pointer.
    std::byte* add(const std::string& name, const std::string& origin, DType dtype,
                   std::vector<int64_t> shape) {
        int64_t n = 1;
        for (int64_t d : shape)
            n *= d;
        Buffer& b =
            storage_->buffers.emplace_back(allocate(Device::cpu(), size_t(row_bytes(dtype, n))));
        auto* data = static_cast<std::byte*>(b.data());
        views_[name] = {.origin = origin,
                        .dtype = dtype,
                        .dtype_name = std::string(dtype_name(dtype)),
                        .shape = std::move(shape),
                        .data = data};
        return data;
    }

    // Everything not consumed or replaced passes through as stored.
    Checkpoint finish() {
        for (const std::string& name : source().names())
            if (!consumed_.count(name) && !views_.count(name))
                views_[name] = *source().stored(name);
        return Checkpoint::from_views(source().dir(), std::move(views_), storage_);
    }

  private:
    std::shared_ptr<RepackedStorage> storage_;
    std::map<std::string, Checkpoint::View> views_;
    mutable std::set<std::string> consumed_;
};

std::string expert_name(int64_t layer, int64_t expert, const char* what) {
    return cat("model.layers.", layer, ".mlp.experts.", expert, ".", what);
}

// Float experts: gate_up_proj [E, hidden, 2F] and down_proj [E, F, hidden], transposed into
// per-expert [F, hidden] gate and up and [hidden, F] down, in the stored type.
void repack_float_experts(Repacker& r, const ModelConfig& c, int64_t layer) {
    const std::string p = cat("model.layers.", layer, ".mlp.experts.");
    const int64_t E = c.n_experts, H = c.hidden_dim, F = c.expert_ffn_dim;
    const Checkpoint::View& gate_up =
        r.stored(p + "gate_up_proj", {E, H, 2 * F}, {"F32", "BF16", "F16"});
    const Checkpoint::View& down = r.stored(p + "down_proj", {E, F, H}, {gate_up.dtype_name});
    const DType type = *gate_up.dtype;
    const auto es = size_t(dtype_block_bytes(type));
    for (int64_t e = 0; e < E; ++e) {
        std::byte* gate = r.add(expert_name(layer, e, "gate_proj.weight"),
                                cat(gate_up.origin, " (expert ", e, ", gate)"), type, {F, H});
        std::byte* up = r.add(expert_name(layer, e, "up_proj.weight"),
                              cat(gate_up.origin, " (expert ", e, ", up)"), type, {F, H});
        std::byte* dn = r.add(expert_name(layer, e, "down_proj.weight"),
                              cat(down.origin, " (expert ", e, ")"), type, {H, F});
        const std::byte* gu = gate_up.data + size_t(e * H * 2 * F) * es;
        for (int64_t i = 0; i < F; ++i)
            for (int64_t h = 0; h < H; ++h) {
                std::memcpy(gate + size_t(i * H + h) * es, gu + size_t(h * 2 * F + 2 * i) * es, es);
                std::memcpy(up + size_t(i * H + h) * es, gu + size_t(h * 2 * F + 2 * i + 1) * es,
                            es);
            }
        const std::byte* d = down.data + size_t(e * F * H) * es;
        for (int64_t o = 0; o < H; ++o)
            for (int64_t j = 0; j < F; ++j)
                std::memcpy(dn + size_t(o * F + j) * es, d + size_t(j * H + o) * es, es);
    }
}

// One row of Hugging Face MXFP4 (n_blocks x 16 bytes, elements (2i, 2i + 1) in byte i, and
// n_blocks scale bytes) into Tandem's blocks (scale byte, then element j in the low nibble of
// byte j < 16, else the high nibble of byte j - 16).
void mxfp4_row_from_hf(const std::byte* blocks, const std::byte* scales, int64_t n_blocks,
                       std::byte* out) {
    auto* dst = reinterpret_cast<cpu::BlockMxfp4*>(out);
    for (int64_t b = 0; b < n_blocks; ++b) {
        const auto* src = reinterpret_cast<const uint8_t*>(blocks + b * 16);
        const auto nibble = [&](int j) { return (src[j / 2] >> (4 * (j % 2))) & 0xF; };
        dst[b].e = uint8_t(scales[b]);
        for (int j = 0; j < 16; ++j)
            dst[b].qs[j] = uint8_t(nibble(j) | (nibble(j + 16) << 4));
    }
}

// MXFP4 experts: the rows of gate_up (2F of hidden) and down (hidden of F) of each expert, with
// gate_up's interleaved rows sent to gate (even) and up (odd).
void repack_mxfp4_experts(Repacker& r, const ModelConfig& c, int64_t layer) {
    const std::string p = cat("model.layers.", layer, ".mlp.experts.");
    const int64_t E = c.n_experts, H = c.hidden_dim, F = c.expert_ffn_dim;
    if (H % cpu::kQK != 0 || F % cpu::kQK != 0)
        fail(r.source().dir(), ": MXFP4 experts need hidden_size (", H, ") and intermediate_size (",
             F, ") to be multiples of 32");
    const int64_t hb = H / cpu::kQK, fb = F / cpu::kQK;
    const auto& gu_blocks = r.stored(p + "gate_up_proj_blocks", {E, 2 * F, hb, 16}, {"U8"});
    const auto& gu_scales = r.stored(p + "gate_up_proj_scales", {E, 2 * F, hb}, {"U8"});
    const auto& dn_blocks = r.stored(p + "down_proj_blocks", {E, H, fb, 16}, {"U8"});
    const auto& dn_scales = r.stored(p + "down_proj_scales", {E, H, fb}, {"U8"});
    const int64_t gate_row = row_bytes(DType::MXFP4, H), down_row = row_bytes(DType::MXFP4, F);
    for (int64_t e = 0; e < E; ++e) {
        std::byte* gate =
            r.add(expert_name(layer, e, "gate_proj.weight"),
                  cat(gu_blocks.origin, " (expert ", e, ", gate)"), DType::MXFP4, {F, H});
        std::byte* up = r.add(expert_name(layer, e, "up_proj.weight"),
                              cat(gu_blocks.origin, " (expert ", e, ", up)"), DType::MXFP4, {F, H});
        std::byte* dn = r.add(expert_name(layer, e, "down_proj.weight"),
                              cat(dn_blocks.origin, " (expert ", e, ")"), DType::MXFP4, {H, F});
        for (int64_t row = 0; row < 2 * F; ++row) {
            const int64_t at = e * 2 * F + row;
            mxfp4_row_from_hf(gu_blocks.data + at * hb * 16, gu_scales.data + at * hb, hb,
                              (row % 2 == 0 ? gate : up) + row / 2 * gate_row);
        }
        for (int64_t row = 0; row < H; ++row) {
            const int64_t at = e * H + row;
            mxfp4_row_from_hf(dn_blocks.data + at * fb * 16, dn_scales.data + at * fb, fb,
                              dn + row * down_row);
        }
    }
}

// A 1-D float tensor as f32 (sinks, and every bias the fused kernel reads as f32).
void as_f32(Repacker& r, const std::string& from, const std::string& to, int64_t n) {
    const Checkpoint::View& v = r.stored(from, {n}, {"F32", "BF16", "F16"});
    auto* out = reinterpret_cast<float*>(r.add(to, v.origin, DType::F32, {n}));
    cpu::row_to_f32(v.data, *v.dtype, n, out);
}

// The expert biases [E, 2F] (interleaved) and [E, hidden], split per expert into f32.
void repack_expert_biases(Repacker& r, const ModelConfig& c, int64_t layer) {
    const std::string p = cat("model.layers.", layer, ".mlp.experts.");
    const int64_t E = c.n_experts, H = c.hidden_dim, F = c.expert_ffn_dim;
    const auto& gu = r.stored(p + "gate_up_proj_bias", {E, 2 * F}, {"F32", "BF16", "F16"});
    const auto& dn = r.stored(p + "down_proj_bias", {E, H}, {"F32", "BF16", "F16"});
    std::vector<float> row(size_t(2 * F));
    const int64_t gu_row = row_bytes(*gu.dtype, 2 * F), dn_row = row_bytes(*dn.dtype, H);
    for (int64_t e = 0; e < E; ++e) {
        cpu::row_to_f32(gu.data + e * gu_row, *gu.dtype, 2 * F, row.data());
        auto* gate = reinterpret_cast<float*>(
            r.add(expert_name(layer, e, "gate_proj.bias"), gu.origin, DType::F32, {F}));
        auto* up = reinterpret_cast<float*>(
            r.add(expert_name(layer, e, "up_proj.bias"), gu.origin, DType::F32, {F}));
        for (int64_t i = 0; i < F; ++i) {
            gate[i] = row[size_t(2 * i)];
            up[i] = row[size_t(2 * i + 1)];
        }
        auto* down = reinterpret_cast<float*>(
            r.add(expert_name(layer, e, "down_proj.bias"), dn.origin, DType::F32, {H}));
        cpu::row_to_f32(dn.data + e * dn_row, *dn.dtype, H, down);
    }
}

Checkpoint repack_gpt_oss(const ModelConfig& c, Checkpoint checkpoint) {
    // GGUF (models/gguf_loader.cpp) already presents per-expert tensors under the names below.
    if (checkpoint.contains(expert_name(0, 0, "gate_proj.weight"))) return checkpoint;
    Repacker r(std::move(checkpoint));
    for (int64_t layer = 0; layer < c.n_layers; ++layer) {
        const std::string p = cat("model.layers.", layer, ".");
        if (r.source().stored(p + "mlp.experts.gate_up_proj_blocks") != nullptr)
            repack_mxfp4_experts(r, c, layer);
        else
            repack_float_experts(r, c, layer);
        repack_expert_biases(r, c, layer);
        as_f32(r, p + "self_attn.sinks", p + "self_attn.sinks", c.n_heads);
    }
    return r.finish();
}

}  // namespace

std::unique_ptr<Model> make_gpt_oss(const ConfigReader& reader, ModelConfig config,
                                    Checkpoint checkpoint) {
    read_common_config(reader, config);
    refuse_partial_rotary(reader, config);
    const bool bias = reader.bool_or("attention_bias", true);
    config.qkv_bias = config.o_bias = bias;
    config.attention_sinks = true;

    config.n_experts = reader.positive_int("num_local_experts");
    config.n_experts_active = reader.positive_int_of({"num_experts_per_tok", "experts_per_token"});
    config.expert_ffn_dim = reader.positive_int("intermediate_size");
    config.norm_topk_prob = true;  // softmax over the top-k logits
    config.router_logit_bias = true;
    config.expert_bias = true;
    config.swiglu_limit = reader.number_or("swiglu_limit", 7.0);
    config.swiglu_alpha = reader.number_or("swiglu_alpha", 1.702);
    if (!(config.swiglu_limit > 0)) reader.fail_key("swiglu_limit", "must be > 0");
    config.layer_is_moe.assign(size_t(config.n_layers), true);

    // No use_sliding_window switch: gpt-oss always alternates (transformers' default puts the
    // window on even layers).
    config.sliding_window =
        reader.has("sliding_window") ? reader.positive_int("sliding_window") : 128;
    config.layer_is_sliding.assign(size_t(config.n_layers), false);
    if (reader.has("layer_types")) {
        const nlohmann::json& types = reader.json().at("layer_types");
        if (!types.is_array() || int64_t(types.size()) != config.n_layers)
            reader.fail_key("layer_types", cat("expected a list of ", config.n_layers, " strings"));
        for (size_t layer = 0; layer < types.size(); ++layer) {
            const nlohmann::json& t = types[layer];
            if (t != "full_attention" && t != "sliding_attention")
                reader.fail_key(
                    "layer_types",
                    cat(t.dump(), " is not supported (full_attention, sliding_attention)"));
            config.layer_is_sliding[layer] = t == "sliding_attention";
        }
    } else {
        for (int64_t layer = 0; layer < config.n_layers; ++layer)
            config.layer_is_sliding[size_t(layer)] = layer % 2 == 0;
    }
    validate_config(config, reader.origin());

    Checkpoint repacked = repack_gpt_oss(config, std::move(checkpoint));
    DecoderNames names;
    names.router = "model.layers.{L}.mlp.router.weight";
    names.router_logit_bias = "model.layers.{L}.mlp.router.bias";
    return std::make_unique<Decoder>(std::move(config), std::move(repacked), names);
}

}  // namespace tandem

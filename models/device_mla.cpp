#include "models/device_mla.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/linear.h"
#include "kernels/cuda/attention.h"
#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/latent_attention.h"
#include "kernels/cuda/linear.h"
#include "kernels/cuda/mla.h"
#include "kernels/cuda/rope.h"
#include "kernels/error.h"
#include "kernels/log.h"
#include "models/rope.h"

namespace tandem {

namespace {

cuda::MlaShape shape_of(const ModelConfig& c) {
    const MlaConfig& m = *c.mla;
    return {.n_heads = c.n_heads,
            .nope = m.qk_nope_head_dim,
            .rope = m.qk_rope_head_dim,
            .latent = m.kv_lora_rank,
            .v = m.v_head_dim,
            .interleaved = m.rope_interleave};
}

// Row `r` of a host weight matrix with rows of `n` elements, as f32.
void host_row(const Tensor& w, int64_t r, int64_t n, float* out) {
    const auto* bytes = static_cast<const std::byte*>(w.data());
    cpu::row_to_f32(bytes + r * row_bytes(w.dtype(), n), w.dtype(), n, out);
}

// W_UKᵀ [H, R, nope] and W_UV [H, V, R] of one layer, f32 on the host, from either layout.
void unpack(const MlaWeights& w, const cuda::MlaShape& s, float* uk, float* uv) {
    const int64_t h_count = s.n_heads, r = s.latent, nope = s.nope, v = s.v;
    if (w.kv_b.empty()) {
        if (w.k_b.empty() || w.v_b.empty()) fail("MLA: the layer has neither kv_b nor k_b/v_b");
        for (int64_t row = 0; row < h_count * r; ++row)
            host_row(w.k_b, row, nope, uk + row * nope);
        for (int64_t row = 0; row < h_count * v; ++row)
            host_row(w.v_b, row, r, uv + row * r);
        return;
    }
    // kv_b [H * (nope + V), R]: per head the nope rows of W_UK, then the V rows of W_UV.
    std::vector<float> line(static_cast<size_t>(r));
    for (int64_t h = 0; h < h_count; ++h) {
        for (int64_t i = 0; i < nope; ++i) {
            host_row(w.kv_b, h * (nope + v) + i, r, line.data());
            for (int64_t j = 0; j < r; ++j)
                uk[(h * r + j) * nope + i] = line[size_t(j)];
        }
        for (int64_t j = 0; j < v; ++j)
            host_row(w.kv_b, h * (nope + v) + nope + j, r, uv + (h * v + j) * r);
    }
}

}  // namespace

DeviceMla::DeviceMla(const ModelConfig& config, const DecoderWeights& host, Stream& stream)
    : config_(config) {
    if (!config.mla) fail("DeviceMla: ", config.architecture, " has no latent attention");
    const cuda::MlaShape s = shape_of(config);
    const int64_t uk_floats = s.n_heads * s.latent * s.nope, uv_floats = s.n_heads * s.v * s.latent;
    const size_t layer_bytes =
        device_aligned(size_t(uk_floats) * 4) + device_aligned(size_t(uv_floats) * 4);
    memory_ = allocate(stream.device(), layer_bytes * host.layers.size());
    auto* base = static_cast<std::byte*>(memory_.data());
    std::vector<float> uk(static_cast<size_t>(uk_floats)), uv(static_cast<size_t>(uv_floats));
    for (size_t l = 0; l < host.layers.size(); ++l) {
        unpack(host.layers[l].mla, s, uk.data(), uv.data());
        std::byte* uk_at = base + l * layer_bytes;
        std::byte* uv_at = uk_at + device_aligned(size_t(uk_floats) * 4);
        stream.copy_async(uk_at, uk.data(), uk.size() * 4, CopyDirection::HostToDevice);
        stream.copy_async(uv_at, uv.data(), uv.size() * 4, CopyDirection::HostToDevice);
        stream.synchronize();  // the host vectors are refilled for the next layer
        uk_.emplace_back(uk_at, DType::F32, Shape{s.n_heads, s.latent, s.nope}, stream.device());
        uv_.emplace_back(uv_at, DType::F32, Shape{s.n_heads, s.v, s.latent}, stream.device());
    }
    log_info(config.architecture, ": ", double(memory_.bytes()) / (1 << 20),
             " MiB of f32 MLA absorption matrices on ", stream.device().name());
}

int64_t DeviceMla::widest_row() const {
    const cuda::MlaShape s = shape_of(config_);
    return std::max({s.n_heads * (s.rope + s.latent), s.n_heads * (s.nope + s.rope),
                     s.n_heads * s.v, s.latent + s.rope, config_.mla->q_lora_rank});
}

void DeviceMla::attention(cuda::Context& ctx, DeviceStepArena& arena, const MlaWeights& w,
                          int layer, std::span<const double> inv_freq, const StepLayout& step,
                          std::span<const KvRows> keys, const Tensor& x, const Tensor& out) const {
    const ModelConfig& c = config_;
    const MlaConfig& m = *c.mla;
    const cuda::MlaShape s = shape_of(c);
    const int64_t n = step.n_tokens, row = s.rope + s.latent;
    const float eps = float(m.latent_norm_eps);

    const Tensor q = arena.tensor({n, s.n_heads * (s.nope + s.rope)});
    if (m.q_lora_rank > 0) {
        const Tensor q_lat = arena.tensor({n, m.q_lora_rank});
        cuda::linear(ctx, x, w.q_a, w.q_a_bias, q_lat);
        cuda::rms_norm(ctx, q_lat, w.q_a_norm, eps, q_lat);
        cuda::linear(ctx, q_lat, w.q_b, Tensor(), q);
    } else {
        cuda::linear(ctx, x, w.q, Tensor(), q);
    }
    const Tensor kv = arena.tensor({n, s.latent + s.rope});
    cuda::linear(ctx, x, w.kv_a, w.kv_a_bias, kv);

    // New cache rows [k_pe | rms_norm(c)] and absorbed queries [q_pe | W_UKᵀ q_nope], then RoPE
    // on their first `rope` dims.
    const Tensor rows = arena.tensor({n, 1, row}), q_abs = arena.tensor({n, s.n_heads, row});
    const Tensor latent = arena.tensor({n, s.latent});
    cuda::mla_split(ctx, s, q, kv, q_abs, rows, latent);
    cuda::rms_norm(ctx, latent, w.kv_a_norm, eps, latent);
    cuda::mla_latent_into_rows(ctx, s, latent, rows);
    cuda::mla_absorb_query(ctx, s, q, uk_[size_t(layer)], q_abs);
    const double rope_scale = rope_attention_factor(c.rope);
    cuda::apply_rope(ctx, rows, step.positions, inv_freq, rope_scale);
    cuda::apply_rope(ctx, q_abs, step.positions, inv_freq, rope_scale);

    const float scale =
        float(std::pow(double(s.nope + s.rope), -0.5) * deepseek_softmax_mscale(c.rope));
    const Tensor lat_out = arena.tensor({n, s.n_heads, s.latent});
    const Tensor flat_rows = rows.reshape({n, row});
    std::vector<cuda::LatentAttentionArgs> sequences;
    for (size_t i = 0; i < step.sequences.size(); ++i) {
        const StepSequence& seq = step.sequences[i];
        const int64_t start = seq.cache->length(), first = seq.first_row;
        const int64_t end = first + seq.n_tokens;
        cuda::write_kv(ctx, keys[i], start, flat_rows.slice_rows(first, end));
        sequences.push_back({.q = q_abs.slice_rows(first, end),
                             .cache = keys[i],
                             .out = lat_out.slice_rows(first, end),
                             .rope_dim = s.rope,
                             .start_pos = start,
                             .scale = scale});
    }
    cuda::latent_attention(ctx, sequences);
    const Tensor attn = arena.tensor({n, s.n_heads * s.v});
    cuda::mla_expand_values(ctx, s, lat_out, uv_[size_t(layer)], attn);
    cuda::linear(ctx, attn, w.o, w.o_bias, out);
}

}  // namespace tandem

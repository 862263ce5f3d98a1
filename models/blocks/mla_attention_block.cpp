#include "models/blocks/mla_attention_block.h"

#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/cpu/latent_attention.h"
#include "kernels/cpu/linear.h"
#include "kernels/cpu/norm.h"
#include "kernels/cpu/rope.h"
#include "models/rope.h"

namespace tandem {

namespace {

// Copies `n` rotary dims from `src` to `dst`, de-interleaving pairs (2i, 2i+1) into (i, i + n/2)
// when `interleaved`.
void copy_rope_part(const float* src, float* dst, int64_t n, bool interleaved) {
    if (!interleaved) {
        std::memcpy(dst, src, size_t(n) * sizeof(float));
        return;
    }
    for (int64_t i = 0; i < n / 2; ++i) {
        dst[i] = src[2 * i];
        dst[n / 2 + i] = src[2 * i + 1];
    }
}

// q_lat[t, h, :] = W_UK_hᵀ q_nope[t, h] for every token, written into q_abs[t, h, rope_dim:].
// From kv_b, W_UK_h is rows [h * (nope + v), h * (nope + v) + nope): each row (one nope index)
// adds a multiple of itself to q_lat. From k_b, W_UK_hᵀ is the R rows of k_b[h]: each gives one
// element of q_lat as a dot product.
void absorb_query(const Tensor& q, const MlaWeights& w, const MlaConfig& m, int64_t n_heads,
                  const Tensor& q_abs, ThreadPool& pool) {
    const int64_t n_tokens = q.dim(0), d = m.qk_head_dim(), r = m.kv_lora_rank;
    const int64_t p = m.qk_rope_head_dim, row = p + r, nope = m.qk_nope_head_dim;
    const float* q_data = q.data_as<const float>();
    float* out = q_abs.data_as<float>();
    if (!w.k_b.empty()) {
        const auto* weights = static_cast<const std::byte*>(w.k_b.data());
        const int64_t k_row_bytes = row_bytes(w.k_b.dtype(), nope);
        pool.run(n_heads, [&](int64_t h) {
            thread_local std::vector<float> w_row;
            w_row.resize(size_t(nope));
            for (int64_t j = 0; j < r; ++j) {
                cpu::row_to_f32(weights + (h * r + j) * k_row_bytes, w.k_b.dtype(), nope,
                                w_row.data());
                for (int64_t t = 0; t < n_tokens; ++t)
                    out[(t * n_heads + h) * row + p + j] =
                        cpu::dot_f32(w_row.data(), q_data + (t * n_heads + h) * d, nope);
            }
        });
        return;
    }
    const auto* weights = static_cast<const std::byte*>(w.kv_b.data());
    const int64_t head_rows = nope + m.v_head_dim;
    const int64_t kv_row_bytes = row_bytes(w.kv_b.dtype(), r);
    pool.run(n_heads, [&](int64_t h) {
        thread_local std::vector<float> w_row;
        w_row.resize(size_t(r));
        for (int64_t t = 0; t < n_tokens; ++t)
            std::fill_n(out + (t * n_heads + h) * row + p, r, 0.0f);
        for (int64_t i = 0; i < nope; ++i) {
            cpu::row_to_f32(weights + (h * head_rows + i) * kv_row_bytes, w.kv_b.dtype(), r,
                            w_row.data());
            for (int64_t t = 0; t < n_tokens; ++t) {
                const float qi = q_data[(t * n_heads + h) * d + i];
                float* dst = out + (t * n_heads + h) * row + p;
                for (int64_t j = 0; j < r; ++j)
                    dst[j] += qi * w_row[size_t(j)];
            }
        }
    });
}

// attn[t, h * v + j] = W_UV_h[j] · lat[t, h], W_UV_h being rows
// [h * (nope + v) + nope, (h + 1) * (nope + v)) of kv_b, or the v rows of v_b[h].
void expand_values(const Tensor& lat, const MlaWeights& w, const MlaConfig& m, int64_t n_heads,
                   const Tensor& attn, ThreadPool& pool) {
    const int64_t n_tokens = lat.dim(0), r = m.kv_lora_rank, v = m.v_head_dim;
    const bool split = w.kv_b.empty();
    const Tensor& uv = split ? w.v_b : w.kv_b;
    const int64_t head_rows = split ? v : m.qk_nope_head_dim + v;
    const int64_t first_row = split ? 0 : m.qk_nope_head_dim;
    const auto* weights = static_cast<const std::byte*>(uv.data());
    const int64_t uv_row_bytes = row_bytes(uv.dtype(), r);
    pool.run(n_heads, [&](int64_t h) {
        thread_local std::vector<float> w_row;
        w_row.resize(size_t(r));
        for (int64_t j = 0; j < v; ++j) {
            cpu::row_to_f32(weights + (h * head_rows + first_row + j) * uv_row_bytes, uv.dtype(), r,
                            w_row.data());
            for (int64_t t = 0; t < n_tokens; ++t)
                attn.data_as<float>()[(t * n_heads + h) * v + j] = cpu::dot_f32(
                    w_row.data(), lat.data_as<const float>() + (t * n_heads + h) * r, r);
        }
    });
}

}  // namespace

void mla_attention_block(const MlaWeights& w, const ModelConfig& c, int layer,
                         std::span<const double> inv_freq, const StepLayout& step, const Tensor& x,
                         const Tensor& out, ThreadPool& pool, ScratchArena& scratch) {
    const MlaConfig& m = *c.mla;
    const int64_t n_tokens = step.n_tokens, n_heads = c.n_heads;
    const int64_t d = m.qk_head_dim(), p = m.qk_rope_head_dim, r = m.kv_lora_rank;
    const int64_t row = p + r;
    const float eps = float(m.latent_norm_eps);

    const ScratchArena::Frame frame(scratch);
    const Tensor q = scratch.take_tensor(DType::F32, {n_tokens, n_heads * d}, "mla q");
    if (m.q_lora_rank > 0) {
        const Tensor q_lat =
            scratch.take_tensor(DType::F32, {n_tokens, m.q_lora_rank}, "mla q latent");
        cpu::linear(x, w.q_a, w.q_a_bias, q_lat, pool);
        cpu::rms_norm(q_lat, w.q_a_norm, eps, q_lat, pool);
        cpu::linear(q_lat, w.q_b, Tensor(), q, pool);
    } else {
        cpu::linear(x, w.q, Tensor(), q, pool);
    }
    const Tensor kv = scratch.take_tensor(DType::F32, {n_tokens, r + p}, "mla kv");
    cpu::linear(x, w.kv_a, w.kv_a_bias, kv, pool);

    // New cache rows [k_pe | rms_norm(c)] and absorbed queries [q_pe | W_UKᵀ q_nope].
    const Tensor latent = scratch.take_tensor(DType::F32, {n_tokens, r}, "mla latent");
    const Tensor rows = scratch.take_tensor(DType::F32, {n_tokens, 1, row}, "mla cache rows");
    const Tensor q_abs = scratch.take_tensor(DType::F32, {n_tokens, n_heads, row}, "mla queries");
    for (int64_t t = 0; t < n_tokens; ++t) {
        const float* kv_t = kv.data_as<const float>() + t * (r + p);
        std::memcpy(latent.data_as<float>() + t * r, kv_t, size_t(r) * sizeof(float));
        copy_rope_part(kv_t + r, rows.data_as<float>() + t * row, p, m.rope_interleave);
        for (int64_t h = 0; h < n_heads; ++h)
            copy_rope_part(q.data_as<const float>() + (t * n_heads + h) * d + m.qk_nope_head_dim,
                           q_abs.data_as<float>() + (t * n_heads + h) * row, p, m.rope_interleave);
    }
    cpu::rms_norm(latent, w.kv_a_norm, eps, latent, pool);
    for (int64_t t = 0; t < n_tokens; ++t)
        std::memcpy(rows.data_as<float>() + t * row + p, latent.data_as<const float>() + t * r,
                    size_t(r) * sizeof(float));
    absorb_query(q, w, m, n_heads, q_abs, pool);
    const double rope_scale = rope_attention_factor(c.rope);
    cpu::apply_rope(rows, step.positions, inv_freq, rope_scale);
    cpu::apply_rope(q_abs, step.positions, inv_freq, rope_scale);

    const float scale = float(std::pow(double(d), -0.5) * deepseek_softmax_mscale(c.rope));
    const Tensor lat_out = scratch.take_tensor(DType::F32, {n_tokens, n_heads, r}, "mla outputs");
    for (const StepSequence& seq : step.sequences) {
        const int64_t start = seq.cache->length();
        const KvRows cache = seq.cache->keys(layer);
        write_rows(cache, start, rows.data_as<const float>() + seq.first_row * row, seq.n_tokens);
        const int64_t end = seq.first_row + seq.n_tokens;
        cpu::latent_attention({.q = q_abs.slice_rows(seq.first_row, end),
                               .cache = cache,
                               .out = lat_out.slice_rows(seq.first_row, end),
                               .rope_dim = p,
                               .start_pos = start,
                               .scale = scale},
                              pool);
    }
    const Tensor attn =
        scratch.take_tensor(DType::F32, {n_tokens, n_heads * m.v_head_dim}, "mla values");
    expand_values(lat_out, w, m, n_heads, attn, pool);
    cpu::linear(attn, w.o, w.o_bias, out, pool);
}

size_t mla_attention_scratch_bytes(const ModelConfig& c, int64_t n_tokens) {
    const MlaConfig& m = *c.mla;
    const int64_t r = m.kv_lora_rank, p = m.qk_rope_head_dim, row = p + r;
    const auto f32 = [&](int64_t per_token) {
        return ScratchArena::rounded(size_t(n_tokens * per_token) * 4);
    };
    return f32(c.n_heads * m.qk_head_dim()) + f32(m.q_lora_rank) + f32(r + p) + f32(r) + f32(row) +
           f32(c.n_heads * row) + f32(c.n_heads * r) + f32(c.n_heads * m.v_head_dim);
}

}  // namespace tandem

// The decoder's forward step on a CUDA device (see device_decoder.h). Built into the CUDA plugin
// and the GPU tests only; device_decoder_stub.cpp stands in in a CPU-only build.
#include "models/device_decoder.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <vector>

#include "kernels/cpu/linear.h"
#include "kernels/cuda/attention.h"
#include "kernels/cuda/context.h"
#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/linear.h"
#include "kernels/cuda/moe_experts.h"
#include "kernels/cuda/rope.h"
#include "kernels/cuda/router.h"
#include "kernels/cuda/step_ops.h"
#include "kernels/error.h"
#include "kernels/log.h"
#include "kernels/stream.h"
#include "models/blocks/moe_block.h"
#include "models/blocks/router.h"
#include "models/decoder.h"

namespace tandem {

namespace {

constexpr size_t kAlign = 256;  // cudaMalloc's alignment, kept for every sub-allocation

size_t aligned(size_t bytes) {
    return (bytes + kAlign - 1) / kAlign * kAlign;
}

// Every weight tensor of the decoder that the device reads, each once (a tied lm_head is the
// embedding). The embedding itself stays on the host: a step looks up its few rows there.
template <class Fn>
void for_each_weight(DecoderWeights& w, bool tied, Fn fn) {
    auto ffn = [&](cpu::ExpertWeights& e) {
        fn(e.gate);
        fn(e.up);
        fn(e.down);
    };
    fn(w.final_norm);
    if (tied) fn(w.embed);
    fn(w.lm_head);
    for (LayerWeights& l : w.layers) {
        AttentionWeights& a = l.attention;
        for (Tensor* t : {&a.norm, &a.q, &a.k, &a.v, &a.o, &a.q_bias, &a.k_bias, &a.v_bias,
                          &a.o_bias, &a.q_norm, &a.k_norm})
            fn(*t);
        fn(l.ffn_norm);
        if (l.is_moe) {
            // The router and the shared expert's gate go up as f32 (router_weights_f32).
            for (cpu::ExpertWeights& e : l.moe.experts)
                ffn(e);
            ffn(l.moe.shared);
        } else {
            ffn(l.dense);
        }
    }
}

// A bump allocator over one device buffer, reset every step: the step's activations without a
// cudaMalloc (and the device-wide synchronisation of its cudaFree) per tensor.
class StepArena {
  public:
    void reserve(Stream& stream, size_t bytes) {
        if (buffer_.bytes() < bytes) {
            stream.synchronize();  // the last step's kernels may still read the old buffer
            buffer_ = Buffer();
            buffer_ = allocate(stream.device(), bytes);
        }
        used_ = 0;
    }
    // Everything handed out after mark() is free again after release_to(mark): stream order
    // keeps the next layer's kernels behind this layer's.
    size_t mark() const { return used_; }
    void release_to(size_t mark) { used_ = mark; }
    Tensor tensor(Shape shape, DType dtype = DType::F32) {
        const size_t bytes = aligned(size_t(shape.numel()) * size_t(dtype_block_bytes(dtype)));
        if (used_ + bytes > buffer_.bytes())
            fail("device step arena: ", used_ + bytes, " bytes asked of ", buffer_.bytes());
        Tensor t(static_cast<std::byte*>(buffer_.data()) + used_, dtype, shape, buffer_.device());
        used_ += bytes;
        return t;
    }

  private:
    Buffer buffer_;
    size_t used_ = 0;
};

class DeviceDecoder final : public Model {
  public:
    DeviceDecoder(std::unique_ptr<Decoder> host, Device device)
        : host_(std::move(host)), device_(device) {
        const ModelConfig& c = host_->config();
        if (c.mla)
            fail(c.architecture, ": multi-head latent attention does not run on ", device.name(),
                 " yet; run this model on the CPU");
        stream_ = make_stream(device);
        ctx_ = std::make_unique<cuda::Context>(*stream_);
        upload_weights();
    }

    ~DeviceDecoder() override { stream_->synchronize(); }

    const ModelConfig& config() const override { return host_->config(); }

    KvCacheShape kv_cache_shape(int64_t capacity) const override {
        KvCacheShape shape = host_->kv_cache_shape(capacity);
        shape.device = device_;
        return shape;
    }

    void set_expert_runner(ExpertRunner* runner) override {
        if (runner != nullptr)
            fail(config().architecture, " on ", device_.name(),
                 ": a hybrid expert runner (EngineConfig.expert_device) cannot be combined with "
                 "the model on the GPU yet");
    }

    void quantize_weights(DType type, ThreadPool& pool) override {
        host_->quantize_weights(type, pool);
        upload_weights();
    }

    OwnedTensor forward(std::span<const SequenceStep> steps, ThreadPool& pool,
                        StepRouting* routing) override;

  private:
    void upload_weights();
    Tensor upload_as_f32(const Tensor& host);
    void attention(const LayerWeights& lw, const StepLayout& step, std::span<const KvRows> keys,
                   std::span<const KvRows> values, const Tensor& x, const Tensor& out);
    void swiglu(const cpu::ExpertWeights& w, const Tensor& x, const Tensor& out);
    Routing route_on_host(const MoeWeights& device_moe, const MoeWeights& host_moe,
                          const Tensor& x);
    void moe(int layer, const Tensor& x, const Tensor& out, Routing* routing_out);

    std::unique_ptr<Decoder> host_;
    Device device_;
    std::unique_ptr<Stream> stream_;
    std::unique_ptr<cuda::Context> ctx_;
    Buffer weight_memory_;
    DecoderWeights weights_;           // views into weight_memory_ and f32_weights_
    std::vector<Buffer> f32_weights_;  // routers and shared-expert gates, widened to f32
    // Per layer (null for dense layers): the device table of its experts, for routing on the
    // device without a host round trip.
    std::vector<std::unique_ptr<cuda::DeviceExpertTable>> expert_tables_;
    cuda::RouterParams router_params_;
    Buffer block_tables_;  // this step's KV block tables, all sequences
    StepArena arena_;
};

void DeviceDecoder::upload_weights() {
    stream_->synchronize();
    weights_ = host_->weights();
    const bool tied = config().tie_word_embeddings;
    // One allocation for all weights; a tensor bound twice (a tied lm_head) is copied once.
    std::map<const void*, size_t> offsets;
    size_t total = 0;
    for_each_weight(weights_, tied, [&](Tensor& t) {
        if (t.empty() || offsets.count(t.data())) return;
        if (!t.is_contiguous()) fail("device upload: ", t.describe(), " is not contiguous");
        offsets[t.data()] = total;
        total += aligned(size_t(t.bytes()));
    });
    weight_memory_ = Buffer();
    weight_memory_ = allocate(device_, std::max<size_t>(total, kAlign));
    auto* base = static_cast<std::byte*>(weight_memory_.data());
    std::map<const void*, bool> copied;
    for_each_weight(weights_, tied, [&](Tensor& t) {
        if (t.empty()) return;
        const void* host = t.data();
        std::byte* dst = base + offsets.at(host);
        if (!copied[host]) {
            stream_->copy_async(dst, host, size_t(t.bytes()), CopyDirection::HostToDevice);
            copied[host] = true;
        }
        t = Tensor(dst, t.dtype(), t.shape(), device_);
    });
    // Routers decide which experts run: a near-tie decided on bf16-rounded inputs picks other
    // experts than the CPU does. They are tiny, so they run in f32 at any token count (the
    // tensor-core GEMM path reads bf16 copies of the activations for bf16 weights).
    f32_weights_.clear();
    expert_tables_.clear();
    for (LayerWeights& l : weights_.layers) {
        expert_tables_.emplace_back();
        if (!l.is_moe) continue;
        l.moe.router = upload_as_f32(l.moe.router);
        l.moe.router_bias = upload_as_f32(l.moe.router_bias);
        l.moe.shared_expert_gate = upload_as_f32(l.moe.shared_expert_gate);
        expert_tables_.back() = std::make_unique<cuda::DeviceExpertTable>(*ctx_, l.moe.experts);
    }
    const ModelConfig& c = config();
    router_params_ = {.n_experts = int32_t(c.n_experts),
                      .k = int32_t(c.n_experts_active),
                      .scoring = c.router_scoring == RouterScoring::Sigmoid
                                     ? cuda::RouterScoringKind::Sigmoid
                                     : cuda::RouterScoringKind::Softmax,
                      .topk = c.router_topk == RouterTopk::Greedy ? cuda::RouterTopkKind::Greedy
                              : c.router_topk == RouterTopk::GroupLimitedGreedy
                                  ? cuda::RouterTopkKind::GroupLimitedGreedy
                                  : cuda::RouterTopkKind::NoauxTc,
                      .n_groups = int32_t(c.n_groups),
                      .topk_groups = int32_t(c.topk_groups),
                      .normalize = c.norm_topk_prob,
                      .scaling = float(c.routed_scaling_factor)};
    stream_->synchronize();
    log_info(config().architecture, ": ", double(total) / (1 << 20), " MiB of weights on ",
             device_.name());
}

Tensor DeviceDecoder::upload_as_f32(const Tensor& host) {
    if (host.empty()) return host;
    const int64_t n = host.numel();
    std::vector<float> wide(static_cast<size_t>(n));
    const int64_t row = host.dim(host.rank() - 1);
    const auto* bytes = static_cast<const std::byte*>(host.data());
    for (int64_t r = 0; r < n / row; ++r)
        cpu::row_to_f32(bytes + r * row_bytes(host.dtype(), row), host.dtype(), row,
                        wide.data() + r * row);
    Buffer& buffer = f32_weights_.emplace_back(allocate(device_, wide.size() * sizeof(float)));
    stream_->copy_async(buffer.data(), wide.data(), wide.size() * sizeof(float),
                        CopyDirection::HostToDevice);
    stream_->synchronize();  // `wide` goes out of scope
    return Tensor(buffer.data(), DType::F32, host.shape(), device_);
}

void DeviceDecoder::swiglu(const cpu::ExpertWeights& w, const Tensor& x, const Tensor& out) {
    const int64_t n = x.dim(0), ffn = w.gate.dim(0);
    const Tensor gate = arena_.tensor({n, ffn}), up = arena_.tensor({n, ffn});
    cuda::linear(*ctx_, x, w.gate, Tensor(), gate);
    cuda::linear(*ctx_, x, w.up, Tensor(), up);
    cuda::silu_mul(*ctx_, gate, up, gate);
    cuda::linear(*ctx_, gate, w.down, Tensor(), out);
}

void DeviceDecoder::attention(const LayerWeights& lw, const StepLayout& step,
                              std::span<const KvRows> keys, std::span<const KvRows> values,
                              const Tensor& x, const Tensor& out) {
    const ModelConfig& c = config();
    const AttentionWeights& w = lw.attention;
    const int64_t n = step.n_tokens;
    const int64_t q_dim = c.n_heads * c.head_dim, kv_dim = c.n_kv_heads * c.head_dim;
    const float eps = float(c.rms_norm_eps);
    const Tensor q = arena_.tensor({n, q_dim}), k = arena_.tensor({n, kv_dim}),
                 v = arena_.tensor({n, kv_dim});
    cuda::linear(*ctx_, x, w.q, w.q_bias, q);
    cuda::linear(*ctx_, x, w.k, w.k_bias, k);
    cuda::linear(*ctx_, x, w.v, w.v_bias, v);
    if (c.qk_norm == QkNorm::Full) {
        cuda::rms_norm(*ctx_, q, w.q_norm, eps, q);
        cuda::rms_norm(*ctx_, k, w.k_norm, eps, k);
    } else if (c.qk_norm == QkNorm::PerHead) {
        const Tensor qh = q.reshape({n * c.n_heads, c.head_dim});
        const Tensor kh = k.reshape({n * c.n_kv_heads, c.head_dim});
        cuda::rms_norm(*ctx_, qh, w.q_norm, eps, qh);
        cuda::rms_norm(*ctx_, kh, w.k_norm, eps, kh);
    }
    if (c.clip_qkv > 0)
        for (const Tensor* t : {&q, &k, &v})
            cuda::clamp(*ctx_, *t, float(c.clip_qkv));
    const Tensor q_heads = q.reshape({n, c.n_heads, c.head_dim});
    const Tensor k_heads = k.reshape({n, c.n_kv_heads, c.head_dim});
    cuda::apply_rope(*ctx_, q_heads, step.positions, host_->inv_freq());
    cuda::apply_rope(*ctx_, k_heads, step.positions, host_->inv_freq());

    const Tensor attended = arena_.tensor({n, c.n_heads, c.head_dim});
    const float scale = 1.0f / std::sqrt(float(c.head_dim));
    std::vector<cuda::AttentionArgs> sequences;
    for (size_t s = 0; s < step.sequences.size(); ++s) {
        const StepSequence& seq = step.sequences[s];
        const int64_t start = seq.cache->length(), first = seq.first_row;
        cuda::write_kv(*ctx_, keys[s], start, k.slice_rows(first, first + seq.n_tokens));
        cuda::write_kv(*ctx_, values[s], start, v.slice_rows(first, first + seq.n_tokens));
        sequences.push_back({.q = q_heads.slice_rows(first, first + seq.n_tokens),
                             .k_cache = keys[s],
                             .v_cache = values[s],
                             .out = attended.slice_rows(first, first + seq.n_tokens),
                             .start_pos = start,
                             .scale = scale,
                             .sliding_window = c.sliding_window});
    }
    cuda::attention(*ctx_, sequences);
    cuda::linear(*ctx_, attended.reshape({n, q_dim}), w.o, w.o_bias, out);
}

// The router's logits come back to the host and tandem::route picks the experts there, exactly
// as on the CPU (the same code, so the same choices on near-ties).
Routing DeviceDecoder::route_on_host(const MoeWeights& device_moe, const MoeWeights& host_moe,
                                     const Tensor& x) {
    const ModelConfig& c = config();
    const int64_t n = x.dim(0);
    const Tensor logits = arena_.tensor({n, c.n_experts});
    cuda::linear(*ctx_, x, device_moe.router, Tensor(), logits);
    OwnedTensor host_logits = make_tensor(DType::F32, {n, c.n_experts});
    stream_->copy_async(host_logits.view.data(), logits.data(), size_t(logits.bytes()),
                        CopyDirection::DeviceToHost);
    std::vector<float> bias;
    if (!host_moe.router_bias.empty()) {
        bias.resize(size_t(c.n_experts));
        cpu::row_to_f32(host_moe.router_bias.data(), host_moe.router_bias.dtype(), c.n_experts,
                        bias.data());
    }
    stream_->synchronize();
    return route(host_logits.view, router_options(c), bias);
}

// Decode-sized steps route on the device (cuda::route, then the grouped expert kernels read
// the choices from device memory): no host round trip per layer. Larger steps, and steps whose
// routing the caller asked for, route on the host.
void DeviceDecoder::moe(int layer, const Tensor& x, const Tensor& out, Routing* routing_out) {
    const ModelConfig& c = config();
    const LayerWeights& lw = weights_.layers[size_t(layer)];
    const int64_t n = x.dim(0), k = c.n_experts_active;
    cuda::zero(*ctx_, out);
    if (routing_out == nullptr && n * k <= cuda::kMaxRoutedSlots && n <= cuda::kGemvMaxTokens &&
        c.n_experts <= cuda::kMaxRouterExperts) {
        const Tensor logits = arena_.tensor({n, c.n_experts});
        const Tensor ids = arena_.tensor({n, k}, DType::I32), weights = arena_.tensor({n, k});
        cuda::linear(*ctx_, x, lw.moe.router, Tensor(), logits);
        cuda::route(*ctx_, router_params_,
                    {.logits = logits, .bias = lw.moe.router_bias, .ids = ids, .weights = weights});
        cuda::moe_experts_routed(
            *ctx_, *expert_tables_[size_t(layer)],
            {.x = x, .out = out, .expert_ids = ids, .expert_weights = weights});
    } else {
        Routing routing = route_on_host(lw.moe, host_->weights().layers[size_t(layer)].moe, x);
        const ExpertGroups groups = group_by_expert(routing, c.n_experts);
        cuda::moe_experts(*ctx_, {.x = x,
                                  .out = out,
                                  .experts = lw.moe.experts,
                                  .offsets = groups.offsets,
                                  .token_index = groups.token_index,
                                  .token_weight = groups.token_weight});
        if (routing_out != nullptr) *routing_out = std::move(routing);
    }
    if (c.shared_expert_ffn_dim > 0) {
        const Tensor shared = arena_.tensor({n, c.hidden_dim});
        swiglu(lw.moe.shared, x, shared);
        Tensor gate;
        if (c.shared_expert_gated) {
            gate = arena_.tensor({n, 1});
            cuda::linear(*ctx_, x, lw.moe.shared_expert_gate, Tensor(), gate);
        }
        cuda::add_gated_rows(*ctx_, out, shared, gate);
    }
}

OwnedTensor DeviceDecoder::forward(std::span<const SequenceStep> steps, ThreadPool& pool,
                                   StepRouting* routing) {
    (void)pool;
    const ModelConfig& c = config();
    const StepLayout layout = layout_step(steps, c);
    ctx_->make_current();
    if (routing != nullptr) {
        const int lookahead = std::clamp(routing->lookahead, 0, 3);
        *routing = {};
        routing->lookahead = lookahead;
    }
    const int64_t n = layout.n_tokens, hidden = c.hidden_dim;

    // Rows that need logits: every new token, or each sequence's last.
    std::vector<int64_t> rows;
    for (size_t s = 0; s < steps.size(); ++s) {
        const StepSequence& seq = layout.sequences[s];
        const int64_t first =
            steps[s].all_logits ? seq.first_row : seq.first_row + seq.n_tokens - 1;
        for (int64_t r = first; r < seq.first_row + seq.n_tokens; ++r)
            rows.push_back(r);
    }
    const int64_t n_rows = int64_t(rows.size());

    // The step's activations, sized generously from the widest projection.
    const int64_t widest =
        std::max({c.hidden_dim, c.n_heads * c.head_dim, c.ffn_dim, c.expert_ffn_dim,
                  c.shared_expert_ffn_dim, c.n_experts, int64_t(1)});
    arena_.reserve(*stream_, aligned(size_t(n) * size_t(widest) * 4) * 12 +
                                 aligned(size_t(n_rows) * size_t(hidden) * 4) +
                                 aligned(size_t(n_rows) * size_t(c.vocab_size) * 4) + 16 * kAlign);

    // Embeddings: looked up on the host, where the table is (any weight type), then uploaded.
    std::vector<float> embedded(size_t(n * hidden));
    {
        const Tensor& table = host_->weights().embed;
        const auto* base = static_cast<const std::byte*>(table.data());
        const int64_t row = row_bytes(table.dtype(), hidden);
        int64_t r = 0;
        for (const SequenceStep& step : steps)
            for (const int32_t token : step.tokens)
                cpu::row_to_f32(base + token * row, table.dtype(), hidden,
                                embedded.data() + hidden * r++);
    }
    const Tensor h = arena_.tensor({n, hidden});
    stream_->copy_async(h.data(), embedded.data(), embedded.size() * sizeof(float),
                        CopyDirection::HostToDevice);

    // Every sequence's KV block table, in device memory for the attention kernels.
    std::vector<int32_t> tables;
    std::vector<size_t> table_start;
    for (const StepSequence& seq : layout.sequences) {
        const KvRows rows_of_layer0 = seq.cache->keys(0);
        table_start.push_back(tables.size());
        const int64_t n_blocks = seq.cache->blocks();
        tables.insert(tables.end(), rows_of_layer0.block_table,
                      rows_of_layer0.block_table + n_blocks);
    }
    const size_t table_bytes = std::max<size_t>(tables.size() * sizeof(int32_t), 4);
    if (block_tables_.bytes() < table_bytes) {
        stream_->synchronize();
        block_tables_ = Buffer();
        block_tables_ = allocate(device_, std::max<size_t>(table_bytes * 2, 4096));
    }
    const auto* device_tables = static_cast<const int32_t*>(block_tables_.data());
    stream_->copy_async(block_tables_.data(), tables.data(), tables.size() * sizeof(int32_t),
                        CopyDirection::HostToDevice);

    const Tensor normed = arena_.tensor({n, hidden}), delta = arena_.tensor({n, hidden});
    const float eps = float(c.rms_norm_eps);
    std::vector<KvRows> keys(layout.sequences.size()), values(layout.sequences.size());
    const size_t layer_mark = arena_.mark();
    for (int layer = 0; layer < int(c.n_layers); ++layer) {
        const LayerWeights& lw = weights_.layers[size_t(layer)];
        for (size_t s = 0; s < layout.sequences.size(); ++s) {
            keys[s] = layout.sequences[s].cache->keys(layer);
            values[s] = layout.sequences[s].cache->values(layer);
            keys[s].block_table = values[s].block_table = device_tables + table_start[s];
        }
        cuda::rms_norm(*ctx_, h, lw.attention.norm, eps, normed);
        arena_.release_to(layer_mark);
        attention(lw, layout, keys, values, normed, delta);
        cuda::add(*ctx_, h, delta, h);
        cuda::rms_norm(*ctx_, h, lw.ffn_norm, eps, normed);
        if (lw.is_moe) {
            Routing* layer_routing = nullptr;
            if (routing != nullptr) {
                routing->layers.push_back(layer);
                layer_routing = &routing->routing.emplace_back();
                std::vector<Routing>& predicted = routing->predicted.emplace_back();
                for (int j = 1; j <= routing->lookahead; ++j) {
                    const int later = layer + j;
                    const bool later_moe =
                        later < int(c.n_layers) && weights_.layers[size_t(later)].is_moe;
                    predicted.push_back(
                        later_moe
                            ? route_on_host(weights_.layers[size_t(later)].moe,
                                            host_->weights().layers[size_t(later)].moe, normed)
                            : Routing{});
                }
            }
            moe(layer, normed, delta, layer_routing);
        } else {
            swiglu(lw.dense, normed, delta);
        }
        cuda::add(*ctx_, h, delta, h);
    }

    arena_.release_to(layer_mark);
    const Tensor selected = arena_.tensor({n_rows, hidden});
    cuda::gather_rows(*ctx_, h, rows, selected);
    cuda::rms_norm(*ctx_, selected, weights_.final_norm, eps, selected);
    const Tensor device_logits = arena_.tensor({n_rows, c.vocab_size});
    cuda::linear(*ctx_, selected, weights_.lm_head, Tensor(), device_logits);
    OwnedTensor logits = make_tensor(DType::F32, {n_rows, c.vocab_size});
    stream_->copy_async(logits.view.data(), device_logits.data(), size_t(logits.view.bytes()),
                        CopyDirection::DeviceToHost);
    stream_->synchronize();

    // Only now, with nothing left to fail, do the caches take the new positions.
    for (const StepSequence& seq : layout.sequences)
        seq.cache->commit(seq.n_tokens);
    return logits;
}

}  // namespace

std::unique_ptr<Model> make_device_model(std::unique_ptr<Model> model, Device device) {
    if (device.kind != DeviceKind::Cuda)
        fail("device model: ", device.name(), " is not a CUDA device (cuda:N)");
    auto* decoder = dynamic_cast<Decoder*>(model.get());
    if (decoder == nullptr) fail(model->config().architecture, " does not run on ", device.name());
    model.release();
    return std::make_unique<DeviceDecoder>(std::unique_ptr<Decoder>(decoder), device);
}

}  // namespace tandem

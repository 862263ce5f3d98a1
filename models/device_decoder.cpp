// The decoder's forward step on a CUDA device (see device_decoder.h). Built into the CUDA plugin
// and the GPU tests only; device_decoder_stub.cpp stands in in a CPU-only build.
#include "models/device_decoder.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <optional>
#include <vector>

#include "kernels/cpu/linear.h"
#include "kernels/cuda/attention.h"
#include "kernels/cuda/context.h"
#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/graph.h"
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
#include "models/device_decode_graph.h"
#include "models/device_hybrid_graph.h"
#include "models/device_mla.h"
#include "models/device_step_arena.h"
#include "models/rope.h"

namespace tandem {

namespace {

// Every weight tensor of the decoder that the device reads, each once (a tied lm_head is the
// embedding). The embedding itself stays on the host: a step looks up its few rows there.
template <class Fn>
void for_each_weight(DecoderWeights& w, bool tied, bool routed_experts, Fn fn) {
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
                          &a.o_bias, &a.q_norm, &a.k_norm, &a.sinks})
            fn(*t);
        // MLA's kv_b (or k_b/v_b) goes up unpacked to f32 instead (DeviceMla).
        MlaWeights& m = l.mla;
        for (Tensor* t : {&m.norm, &m.q, &m.q_a, &m.q_a_norm, &m.q_b, &m.kv_a, &m.kv_a_norm, &m.o,
                          &m.q_a_bias, &m.kv_a_bias, &m.o_bias})
            fn(*t);
        fn(l.ffn_norm);
        if (l.is_moe) {
            // The router and the shared expert's gate go up as f32 (router_weights_f32); the
            // experts' biases (gpt-oss) stay on the host, where cuda::moe_experts takes them.
            if (routed_experts)
                for (cpu::ExpertWeights& e : l.moe.experts)
                    ffn(e);
            ffn(l.moe.shared);
        } else {
            ffn(l.dense);
        }
    }
}

// The context and arena one step's ops run with: the eager path's, or a decode graph's own.
struct DeviceRun {
    cuda::Context& ctx;
    DeviceStepArena& arena;
    ThreadPool* pool = nullptr;           // the step's CPU pool (an expert runner's CPU experts)
    HybridDecodeGraph* hybrid = nullptr;  // a decode graph's routed experts on a hybrid runner
};

class DeviceDecoder final : public Model {
  public:
    DeviceDecoder(std::unique_ptr<Decoder> host, Device device, const DeviceModelOptions& options)
        : host_(std::move(host)), device_(device), options_(options) {
        stream_ = make_stream(device);
        ctx_ = std::make_unique<cuda::Context>(*stream_);
        for (int layer = 0; layer < int(host_->config().n_layers); ++layer)
            if (host_->weights().layers[size_t(layer)].is_moe) moe_layers_.push_back(layer);
        upload_weights();
        if (options_.cuda_graphs) {
            graph_ctx_ = std::make_unique<cuda::Context>(*stream_);
            side_stream_ = make_stream(device);
            branch_ = std::make_unique<cuda::Branch>(*side_stream_);
            const std::span<const double> inv_freq = host_->inv_freq();
            inv_freq_device_ = allocate(device_, std::max<size_t>(inv_freq.size_bytes(), 8));
            stream_->copy_async(inv_freq_device_.data(), inv_freq.data(), inv_freq.size_bytes(),
                                CopyDirection::HostToDevice);
            stream_->synchronize();
        }
    }

    ~DeviceDecoder() override {
        stream_->synchronize();
        if (runner_ != nullptr) runner_->drain();  // its copies read the host decoder's weights
    }

    const ModelConfig& config() const override { return host_->config(); }

    KvCacheShape kv_cache_shape(int64_t capacity) const override {
        KvCacheShape shape = host_->kv_cache_shape(capacity);
        shape.device = device_;
        return shape;
    }

    void set_expert_runner(ExpertRunner* runner) override {
        stream_->synchronize();
        graphs_.clear();  // a hybrid graph's host functions call the runner
        if (runner != nullptr && !options_.routed_experts_on_host)
            fail(config().architecture, " on ", device_.name(),
                 ": every routed expert is on the device, so there is nothing for an expert "
                 "runner to place (DeviceModelOptions.routed_experts_on_host; the engine sets it "
                 "for EngineConfig.expert_device)");
        if (runner != nullptr) runner->bind(config(), host_moe_layers());
        runner_ = runner;
    }

    void quantize_weights(DType type, ThreadPool& pool, const WeightProgress& progress) override {
        if (runner_ != nullptr) runner_->drain();  // copies may still read the old weights
        host_->quantize_weights(type, pool, progress);
        upload_weights();
        if (runner_ != nullptr) set_expert_runner(runner_);
    }

    OwnedTensor forward(std::span<const SequenceStep> steps, ThreadPool& pool,
                        StepRouting* routing) override;

  private:
    void upload_weights();
    Tensor upload_as_f32(const Tensor& host);
    // Whether decode-sized MoE steps may route on the device (cuda::route, then the grouped
    // kernels through a DeviceExpertTable): not for gpt-oss's biased, clamped experts.
    bool routed_on_device_supported() const {
        return config().swiglu_limit <= 0.0 && !config().expert_bias;
    }
    // The layer's attention sinks on the device (gpt-oss), or null.
    static const float* sinks_of(const AttentionWeights& w) {
        return w.sinks.empty() ? nullptr : w.sinks.data_as<const float>();
    }
    struct Qkv {
        Tensor q, k, v;  // [n, heads x head_dim] each, normed and clamped, before RoPE
    };
    Qkv project_qkv(const DeviceRun& run, const AttentionWeights& w, const Tensor& x);
    void attention(const LayerWeights& lw, int layer, const StepLayout& step,
                   std::span<const KvRows> keys, std::span<const KvRows> values, const Tensor& x,
                   const Tensor& out);
    void swiglu(const DeviceRun& run, const cpu::ExpertWeights& w, const Tensor& x,
                const Tensor& out);
    Routing route_on_host(const DeviceRun& run, const MoeWeights& device_moe,
                          const MoeWeights& host_moe, const Tensor& x);
    void moe(const DeviceRun& run, int layer, const Tensor& x, const Tensor& out,
             Routing* routing_out);
    void routed_on_runner(const DeviceRun& run, int layer, const Tensor& x, const Tensor& out,
                          Routing* routing_out);

    // Decode steps through CUDA graphs (device_decode_graph.h).
    std::optional<DecodeGraphKey> graph_key(std::span<const SequenceStep> steps,
                                            const StepLayout& layout,
                                            const StepRouting* routing) const;
    DecodeGraphEntry& graph_entry(const DecodeGraphKey& key);
    void fill_graph_inputs(DecodeGraphEntry& e, std::span<const SequenceStep> steps,
                           const StepLayout& layout);
    void decode_body(DecodeGraphEntry& e, const DecodeGraphKey& key);
    void decode_attention(const DeviceRun& run, const DecodeGraphEntry& e,
                          const DecodeGraphKey& key, const AttentionWeights& w, int layer,
                          const Tensor& x, const Tensor& out);
    OwnedTensor forward_graph(const DecodeGraphKey& key, std::span<const SequenceStep> steps,
                              const StepLayout& layout, ThreadPool& pool);
    std::vector<const MoeWeights*> host_moe_layers() const;

    std::unique_ptr<Decoder> host_;
    Device device_;
    DeviceModelOptions options_;
    std::vector<int> moe_layers_;     // model layer of each MoE layer
    ExpertRunner* runner_ = nullptr;  // routed experts, with routed_experts_on_host
    std::unique_ptr<Stream> stream_;
    std::unique_ptr<cuda::Context> ctx_;
    Buffer weight_memory_;
    DecoderWeights weights_;           // views into weight_memory_ and f32_weights_
    std::vector<Buffer> f32_weights_;  // routers and shared-expert gates, widened to f32
    // Per layer (null for dense layers): the device table of its experts, for routing on the
    // device without a host round trip.
    std::vector<std::unique_ptr<cuda::DeviceExpertTable>> expert_tables_;
    cuda::RouterParams router_params_;
    std::unique_ptr<DeviceMla> mla_;  // when the model has multi-head latent attention
    // Decode graphs: their own context (scratch no eager step reallocates), the RoPE
    // frequencies in device memory, and the captured steps.
    std::unique_ptr<cuda::Context> graph_ctx_;
    Buffer inv_freq_device_;
    std::map<DecodeGraphKey, std::unique_ptr<DecodeGraphEntry>> graphs_;
    // A hybrid graph's prefetch copies run on a branch of their own.
    std::unique_ptr<Stream> side_stream_;
    std::unique_ptr<cuda::Branch> branch_;
    bool graphs_failed_ = false;  // a capture failed: every later step runs eagerly
    Buffer block_tables_;         // this step's KV block tables, all sequences
    Buffer runner_rows_;          // page-locked: a MoE layer's rows and CPU sum for the runner
    DeviceStepArena arena_;
};

void DeviceDecoder::upload_weights() {
    stream_->synchronize();
    graphs_.clear();  // they read the old weights' addresses
    weights_ = host_->weights();
    const bool tied = config().tie_word_embeddings;
    // One allocation for all weights; a tensor bound twice (a tied lm_head) is copied once.
    std::map<const void*, size_t> offsets;
    size_t total = 0;
    for_each_weight(weights_, tied, !options_.routed_experts_on_host, [&](Tensor& t) {
        if (t.empty() || offsets.count(t.data())) return;
        if (!t.is_contiguous()) fail("device upload: ", t.describe(), " is not contiguous");
        offsets[t.data()] = total;
        total += device_aligned(size_t(t.bytes()));
    });
    weight_memory_ = Buffer();
    weight_memory_ = allocate(device_, std::max<size_t>(total, kDeviceAlign));
    auto* base = static_cast<std::byte*>(weight_memory_.data());
    std::map<const void*, bool> copied;
    int64_t done = 0;
    for_each_weight(weights_, tied, !options_.routed_experts_on_host, [&](Tensor& t) {
        if (t.empty()) return;
        const void* host = t.data();
        std::byte* dst = base + offsets.at(host);
        if (!copied[host]) {
            // From pageable (mapped) memory the copy returns once staged: `done` is honest.
            stream_->copy_async(dst, host, size_t(t.bytes()), CopyDirection::HostToDevice);
            copied[host] = true;
            done += int64_t(device_aligned(size_t(t.bytes())));
            if (options_.upload_progress) options_.upload_progress(done, int64_t(total));
        }
        t = Tensor(dst, t.dtype(), t.shape(), device_);
    });
    mla_.reset();
    if (config().mla) {
        mla_ = std::make_unique<DeviceMla>(config(), weights_, *stream_);
        for (LayerWeights& l : weights_.layers)  // host views: never read on the device
            l.mla.kv_b = l.mla.k_b = l.mla.v_b = Tensor();
    }
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
        l.moe.router_logit_bias = upload_as_f32(l.moe.router_logit_bias);
        l.moe.shared_expert_gate = upload_as_f32(l.moe.shared_expert_gate);
        if (options_.routed_experts_on_host) {
            l.moe.experts.clear();  // host views: the runner reads the host decoder's
            continue;
        }
        // The routed kernels' table holds weights only: gpt-oss's biased, clamped experts route
        // on the host and take cuda::moe_experts (moe()).
        if (routed_on_device_supported())
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

void DeviceDecoder::swiglu(const DeviceRun& run, const cpu::ExpertWeights& w, const Tensor& x,
                           const Tensor& out) {
    const int64_t n = x.dim(0), ffn = w.gate.dim(0);
    const Tensor gate = run.arena.tensor({n, ffn}), up = run.arena.tensor({n, ffn});
    cuda::linear(run.ctx, x, w.gate, Tensor(), gate);
    cuda::linear(run.ctx, x, w.up, Tensor(), up);
    cuda::silu_mul(run.ctx, gate, up, gate);
    cuda::linear(run.ctx, gate, w.down, Tensor(), out);
}

DeviceDecoder::Qkv DeviceDecoder::project_qkv(const DeviceRun& run, const AttentionWeights& w,
                                              const Tensor& x) {
    const ModelConfig& c = config();
    const int64_t n = x.dim(0);
    const int64_t q_dim = c.n_heads * c.head_dim, kv_dim = c.n_kv_heads * c.head_dim;
    const float eps = float(c.rms_norm_eps);
    const Qkv p{run.arena.tensor({n, q_dim}), run.arena.tensor({n, kv_dim}),
                run.arena.tensor({n, kv_dim})};
    cuda::linear(run.ctx, x, w.q, w.q_bias, p.q);
    cuda::linear(run.ctx, x, w.k, w.k_bias, p.k);
    cuda::linear(run.ctx, x, w.v, w.v_bias, p.v);
    if (c.qk_norm == QkNorm::Full) {
        cuda::rms_norm(run.ctx, p.q, w.q_norm, eps, p.q);
        cuda::rms_norm(run.ctx, p.k, w.k_norm, eps, p.k);
    } else if (c.qk_norm == QkNorm::PerHead) {
        const Tensor qh = p.q.reshape({n * c.n_heads, c.head_dim});
        const Tensor kh = p.k.reshape({n * c.n_kv_heads, c.head_dim});
        cuda::rms_norm(run.ctx, qh, w.q_norm, eps, qh);
        cuda::rms_norm(run.ctx, kh, w.k_norm, eps, kh);
    }
    if (c.clip_qkv > 0)
        for (const Tensor* t : {&p.q, &p.k, &p.v})
            cuda::clamp(run.ctx, *t, float(c.clip_qkv));
    return p;
}

void DeviceDecoder::attention(const LayerWeights& lw, int layer, const StepLayout& step,
                              std::span<const KvRows> keys, std::span<const KvRows> values,
                              const Tensor& x, const Tensor& out) {
    const ModelConfig& c = config();
    const AttentionWeights& w = lw.attention;
    const int64_t n = step.n_tokens, q_dim = c.n_heads * c.head_dim;
    const auto [q, k, v] = project_qkv({*ctx_, arena_}, w, x);
    const Tensor q_heads = q.reshape({n, c.n_heads, c.head_dim});
    const Tensor k_heads = k.reshape({n, c.n_kv_heads, c.head_dim});
    const double rope_scale = rope_attention_factor(c.rope);
    cuda::apply_rope(*ctx_, q_heads, step.positions, host_->inv_freq(), rope_scale);
    cuda::apply_rope(*ctx_, k_heads, step.positions, host_->inv_freq(), rope_scale);

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
                             .sliding_window = c.sliding_window_of(layer),
                             .sinks = sinks_of(w)});
    }
    cuda::attention(*ctx_, sequences);
    cuda::linear(*ctx_, attended.reshape({n, q_dim}), w.o, w.o_bias, out);
}

// The router's logits come back to the host and tandem::route picks the experts there, exactly
// as on the CPU (the same code, so the same choices on near-ties).
Routing DeviceDecoder::route_on_host(const DeviceRun& run, const MoeWeights& device_moe,
                                     const MoeWeights& host_moe, const Tensor& x) {
    const ModelConfig& c = config();
    const int64_t n = x.dim(0);
    const Tensor logits = run.arena.tensor({n, c.n_experts});
    cuda::linear(run.ctx, x, device_moe.router, device_moe.router_logit_bias, logits);
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

// With a hybrid expert runner the routing is the host's (the runner plans with it, and may
// replace it with a replayed trace's), as are the gate lookahead's predictions; the runner gets
// the layer's rows on the host, splits the experts between the CPU and its device cache, and its
// sum goes up into `out`. The shared expert then runs here as usual.
void DeviceDecoder::routed_on_runner(const DeviceRun& run, int layer, const Tensor& x,
                                     const Tensor& out, Routing* routing_out) {
    const ModelConfig& c = config();
    if (runner_ == nullptr)
        fail(c.architecture, " on ", device_.name(),
             ": the routed experts are in host memory but no expert runner is set");
    const int64_t n = x.dim(0);
    const auto moe_index =
        int(std::find(moe_layers_.begin(), moe_layers_.end(), layer) - moe_layers_.begin());
    const DecoderWeights& host = host_->weights();
    // The rows come down once, through page-locked memory; the runner's device experts read x
    // and add into `out` where they are (MoeLayerCall.device_x/device_out), the CPU's sum goes up
    // and is added on the device.
    const size_t bytes = size_t(n * c.hidden_dim) * sizeof(float);
    if (runner_rows_.bytes() < 2 * bytes) {
        stream_->synchronize();  // the last layer's upload may still read it
        runner_rows_ = allocate_pinned(device_, 2 * bytes);
    }
    auto* host_rows = static_cast<float*>(runner_rows_.data());
    const Tensor host_x(host_rows, DType::F32, {n, c.hidden_dim});
    const Tensor host_out(host_rows + n * c.hidden_dim, DType::F32, {n, c.hidden_dim});
    // The routing and the gate lookahead's predictions: decode-sized steps route the rows on the
    // host, as the CPU engine and a captured step do (one round trip per layer, not one per
    // router); larger steps compute the routers' logits on the device.
    const bool on_host = n <= cuda::kGemvMaxTokens;
    const int lookahead = std::clamp(runner_->lookahead(), 0, 3);
    auto route_layer = [&](size_t model_layer) {
        return on_host ? route_with(host.layers[model_layer].moe, c, host_x, *run.pool)
                       : route_on_host(run, weights_.layers[model_layer].moe,
                                       host.layers[model_layer].moe, x);
    };
    stream_->copy_async(host_x.data(), x.data(), bytes, CopyDirection::DeviceToHost);
    stream_->synchronize();  // also: `out` is zeroed, x is ready for the runner's streams
    Routing routing;
    if (!runner_->replace_routing(moe_index, n, routing)) routing = route_layer(size_t(layer));
    std::vector<Routing> predicted;
    for (int i = moe_index + 1; i <= moe_index + lookahead && i < int(moe_layers_.size()); ++i)
        predicted.push_back(route_layer(size_t(moe_layers_[size_t(i)])));
    std::fill_n(host_out.data_as<float>(), n * c.hidden_dim, 0.0f);
    runner_->run({.layer = layer,
                  .moe_layer = moe_index,
                  .weights = &host.layers[size_t(layer)].moe,
                  .x = host_x,
                  .routing = &routing,
                  .predicted = predicted,
                  .out = host_out,
                  .device_x = x,
                  .device_out = out},
                 *run.pool);
    const Tensor cpu_sum = run.arena.tensor({n, c.hidden_dim});
    stream_->copy_async(cpu_sum.data(), host_out.data(), bytes, CopyDirection::HostToDevice);
    cuda::add(run.ctx, out, cpu_sum, out);
    // The next layer's download waits for this upload (runner_rows_ is reused): the stream's
    // order, and the synchronize before the runner runs.
    if (routing_out != nullptr) *routing_out = std::move(routing);
}

// Decode-sized steps route on the device (cuda::route, then the grouped expert kernels read
// the choices from device memory): no host round trip per layer. Larger steps, and steps whose
// routing the caller asked for, route on the host.
void DeviceDecoder::moe(const DeviceRun& run, int layer, const Tensor& x, const Tensor& out,
                        Routing* routing_out) {
    const ModelConfig& c = config();
    const LayerWeights& lw = weights_.layers[size_t(layer)];
    const int64_t n = x.dim(0), k = c.n_experts_active;
    cuda::zero(run.ctx, out);
    if (options_.routed_experts_on_host && run.hybrid != nullptr) {
        const auto moe_index =
            int(std::find(moe_layers_.begin(), moe_layers_.end(), layer) - moe_layers_.begin());
        run.hybrid->record(run.ctx, *branch_, moe_index, x, out);
    } else if (options_.routed_experts_on_host) {
        routed_on_runner(run, layer, x, out, routing_out);
    } else if (routing_out == nullptr && n * k <= cuda::kMaxRoutedSlots &&
               n <= cuda::kGemvMaxTokens && c.n_experts <= cuda::kMaxRouterExperts &&
               expert_tables_[size_t(layer)] != nullptr) {
        const Tensor logits = run.arena.tensor({n, c.n_experts});
        const Tensor ids = run.arena.tensor({n, k}, DType::I32), weights = run.arena.tensor({n, k});
        cuda::linear(run.ctx, x, lw.moe.router, lw.moe.router_logit_bias, logits);
        cuda::route(run.ctx, router_params_,
                    {.logits = logits, .bias = lw.moe.router_bias, .ids = ids, .weights = weights});
        cuda::moe_experts_routed(
            run.ctx, *expert_tables_[size_t(layer)],
            {.x = x, .out = out, .expert_ids = ids, .expert_weights = weights});
    } else {
        Routing routing = route_on_host(run, lw.moe, host_->weights().layers[size_t(layer)].moe, x);
        const ExpertGroups groups = group_by_expert(routing, c.n_experts);
        cuda::moe_experts(run.ctx, {.x = x,
                                    .out = out,
                                    .experts = lw.moe.experts,
                                    .offsets = groups.offsets,
                                    .token_index = groups.token_index,
                                    .token_weight = groups.token_weight,
                                    .glu = glu_options(c)});
        if (routing_out != nullptr) *routing_out = std::move(routing);
    }
    if (c.shared_expert_ffn_dim > 0) {
        const Tensor shared = run.arena.tensor({n, c.hidden_dim});
        swiglu(run, lw.moe.shared, x, shared);
        Tensor gate;
        if (c.shared_expert_gated) {
            gate = run.arena.tensor({n, 1});
            cuda::linear(run.ctx, x, lw.moe.shared_expert_gate, Tensor(), gate);
        }
        cuda::add_gated_rows(run.ctx, out, shared, gate);
    }
}

std::optional<DecodeGraphKey> DeviceDecoder::graph_key(std::span<const SequenceStep> steps,
                                                       const StepLayout& layout,
                                                       const StepRouting* routing) const {
    const ModelConfig& c = config();
    const auto n = int64_t(steps.size());
    if (!options_.cuda_graphs || graphs_failed_ || routing != nullptr || c.mla || n == 0 ||
        n > cuda::kGemvMaxTokens)
        return std::nullopt;
    if (options_.routed_experts_on_host) {
        // The runner plans each layer from host functions, and the grouped kernel takes its
        // experts through a writable table.
        if (runner_ == nullptr || !runner_->graph_capable() ||
            !HybridDecodeGraph::supported(c, host_moe_layers(), n))
            return std::nullopt;
    } else if (c.is_moe() &&
               (n * c.n_experts_active > cuda::kMaxRoutedSlots ||
                c.n_experts > cuda::kMaxRouterExperts || !routed_on_device_supported())) {
        return std::nullopt;  // the MoE layers must route on the device (moe()'s condition)
    }
    for (const SequenceStep& step : steps)
        if (step.tokens.size() != 1) return std::nullopt;
    const cuda::KvLayout k = cuda::layout_of(layout.sequences[0].cache->keys(0));
    const cuda::KvLayout v = cuda::layout_of(layout.sequences[0].cache->values(0));
    int64_t needed = 1;
    for (const StepSequence& seq : layout.sequences) {
        if (cuda::layout_of(seq.cache->keys(0)) != k || cuda::layout_of(seq.cache->values(0)) != v)
            return std::nullopt;
        needed = std::max(needed, seq.cache->length() + 1);
    }
    // The decode attention kernel must take these dims and strides; the probe's q and out stand
    // for the entry's aligned arena tensors.
    void* aligned_address = reinterpret_cast<void*>(kDeviceAlign);
    const cuda::DecodeAttentionArgs probe{
        .q = Tensor(aligned_address, DType::F32, {n, c.n_heads, k.head_dim}, device_),
        .out = Tensor(aligned_address, DType::F32, {n, c.n_heads, v.head_dim}, device_),
        .k = k,
        .v = v,
        .max_keys = needed};
    if (!cuda::decode_supported(probe)) return std::nullopt;
    return DecodeGraphKey{.batch = n, .max_keys = decode_graph_keys(needed), .k = k, .v = v};
}

DecodeGraphEntry& DeviceDecoder::graph_entry(const DecodeGraphKey& key) {
    std::unique_ptr<DecodeGraphEntry>& slot = graphs_[key];
    if (slot) return *slot;
    const ModelConfig& c = config();
    auto e = std::make_unique<DecodeGraphEntry>();
    const int64_t n = key.batch;
    e->max_blocks = (key.max_keys + key.k.block_size - 1) / key.k.block_size;
    size_t at = device_aligned(size_t(n * c.hidden_dim) * 4);
    e->positions_offset = at;
    at += device_aligned(size_t(n) * sizeof(int64_t));
    e->tables_offset = at;
    at += device_aligned(size_t(c.n_layers * n) * sizeof(cuda::DecodeSequence));
    e->blocks_offset = at;
    at += device_aligned(size_t(n * e->max_blocks) * sizeof(int32_t));
    e->input_bytes = at;
    const size_t logits_offset = at;
    at += device_aligned(size_t(n * c.vocab_size) * 4);
    e->inputs = allocate(device_, at);
    auto* base = static_cast<std::byte*>(e->inputs.data());
    e->hidden = Tensor(base, DType::F32, {n, c.hidden_dim}, device_);
    e->logits = Tensor(base + logits_offset, DType::F32, {n, c.vocab_size}, device_);
    e->positions = reinterpret_cast<int64_t*>(base + e->positions_offset);
    e->tables = reinterpret_cast<cuda::DecodeSequence*>(base + e->tables_offset);
    e->block_tables = reinterpret_cast<int32_t*>(base + e->blocks_offset);
    // At most 9 live activations per layer of the widest row (decode_body), and the final norm.
    const int64_t widest =
        std::max({c.hidden_dim, c.n_heads * c.head_dim, c.ffn_dim, c.expert_ffn_dim,
                  c.shared_expert_ffn_dim, c.n_experts, int64_t(1)});
    e->arena_bytes = device_aligned(size_t(n * widest) * 4) * 12 + 16 * kDeviceAlign;
    e->arena.reserve(*stream_, e->arena_bytes);
    if (options_.routed_experts_on_host)
        e->hybrid = std::make_unique<HybridDecodeGraph>(device_, *runner_, c, host_moe_layers(), n);
    slot = std::move(e);
    return *slot;
}

// One host image of the entry's inputs, copied in one piece before the step's launch.
void DeviceDecoder::fill_graph_inputs(DecodeGraphEntry& e, std::span<const SequenceStep> steps,
                                      const StepLayout& layout) {
    const ModelConfig& c = config();
    const auto n = int64_t(steps.size());
    std::vector<std::byte> host(e.input_bytes);
    const Tensor& table = host_->weights().embed;
    const int64_t row = row_bytes(table.dtype(), c.hidden_dim);
    auto* hidden = reinterpret_cast<float*>(host.data());
    for (int64_t s = 0; s < n; ++s)
        cpu::row_to_f32(
            static_cast<const std::byte*>(table.data()) + steps[size_t(s)].tokens[0] * row,
            table.dtype(), c.hidden_dim, hidden + s * c.hidden_dim);
    auto* positions = reinterpret_cast<int64_t*>(host.data() + e.positions_offset);
    auto* tables = reinterpret_cast<cuda::DecodeSequence*>(host.data() + e.tables_offset);
    auto* blocks = reinterpret_cast<int32_t*>(host.data() + e.blocks_offset);
    for (int64_t s = 0; s < n; ++s) {
        KvCache& cache = *layout.sequences[size_t(s)].cache;
        const int64_t position = cache.length();
        positions[s] = position;
        const int64_t used = std::min(cache.blocks(), e.max_blocks);
        std::copy_n(cache.keys(0).block_table, used, blocks + s * e.max_blocks);
        const int32_t* device_blocks = e.block_tables + s * e.max_blocks;
        for (int64_t layer = 0; layer < c.n_layers; ++layer)
            tables[layer * n + s] = {.k_base = cache.keys(int(layer)).base,
                                     .v_base = cache.values(int(layer)).base,
                                     .k_blocks = device_blocks,
                                     .v_blocks = device_blocks,
                                     .position = position};
    }
    stream_->copy_async(e.inputs.data(), host.data(), host.size(), CopyDirection::HostToDevice);
}

void DeviceDecoder::decode_attention(const DeviceRun& run, const DecodeGraphEntry& e,
                                     const DecodeGraphKey& key, const AttentionWeights& w,
                                     int layer, const Tensor& x, const Tensor& out) {
    const ModelConfig& c = config();
    const int64_t n = key.batch;
    const auto [q, k, v] = project_qkv(run, w, x);
    const Tensor q_heads = q.reshape({n, c.n_heads, c.head_dim});
    const auto half = int64_t(host_->inv_freq().size());
    const auto* inv_freq = static_cast<const double*>(inv_freq_device_.data());
    const double rope_scale = rope_attention_factor(c.rope);
    cuda::apply_rope(run.ctx, q_heads, e.positions, inv_freq, half, rope_scale);
    cuda::apply_rope(run.ctx, k.reshape({n, c.n_kv_heads, c.head_dim}), e.positions, inv_freq, half,
                     rope_scale);
    const cuda::DecodeSequence* table = e.tables + int64_t(layer) * n;
    cuda::write_kv_decode(run.ctx, table, key.k, key.v, k, v);
    const Tensor attended = run.arena.tensor({n, c.n_heads, c.head_dim});
    cuda::attention_decode(run.ctx, {.q = q_heads,
                                     .out = attended,
                                     .sequences = table,
                                     .k = key.k,
                                     .v = key.v,
                                     .max_keys = key.max_keys,
                                     .scale = 1.0f / std::sqrt(float(c.head_dim)),
                                     .sliding_window = c.sliding_window_of(layer),
                                     .sinks = sinks_of(w)});
    cuda::linear(run.ctx, attended.reshape({n, c.n_heads * c.head_dim}), w.o, w.o_bias, out);
}

// The step's device work, from the entry's inputs to its logits: what a graph captures. It
// allocates from the entry's arena in the same order every time, so a replay's addresses are
// the capture's.
void DeviceDecoder::decode_body(DecodeGraphEntry& e, const DecodeGraphKey& key) {
    const ModelConfig& c = config();
    cuda::Context& ctx = *graph_ctx_;
    const DeviceRun run{ctx, e.arena, nullptr, e.hybrid.get()};
    e.arena.reserve(*stream_, e.arena_bytes);  // the same size: only rewinds
    const int64_t n = key.batch;
    const float eps = float(c.rms_norm_eps);
    const Tensor& h = e.hidden;
    const Tensor normed = e.arena.tensor({n, c.hidden_dim}),
                 delta = e.arena.tensor({n, c.hidden_dim});
    const size_t layer_mark = e.arena.mark();
    for (int layer = 0; layer < int(c.n_layers); ++layer) {
        const LayerWeights& lw = weights_.layers[size_t(layer)];
        cuda::rms_norm(ctx, h, lw.attention.norm, eps, normed);
        e.arena.release_to(layer_mark);
        decode_attention(run, e, key, lw.attention, layer, normed, delta);
        cuda::add(ctx, h, delta, h);
        e.arena.release_to(layer_mark);
        cuda::rms_norm(ctx, h, lw.ffn_norm, eps, normed);
        if (lw.is_moe)
            moe(run, layer, normed, delta, nullptr);
        else
            swiglu(run, lw.dense, normed, delta);
        cuda::add(ctx, h, delta, h);
    }
    if (e.hybrid) e.hybrid->finish(ctx, *branch_);
    e.arena.release_to(layer_mark);
    cuda::rms_norm(ctx, h, weights_.final_norm, eps, normed);
    cuda::linear(ctx, normed, weights_.lm_head, Tensor(), e.logits);
}

std::vector<const MoeWeights*> DeviceDecoder::host_moe_layers() const {
    std::vector<const MoeWeights*> moe;
    for (const int layer : moe_layers_)
        moe.push_back(&host_->weights().layers[size_t(layer)].moe);
    return moe;
}

OwnedTensor DeviceDecoder::forward_graph(const DecodeGraphKey& key,
                                         std::span<const SequenceStep> steps,
                                         const StepLayout& layout, ThreadPool& pool) {
    const ModelConfig& c = config();
    DecodeGraphEntry& e = graph_entry(key);
    // A hybrid runner's step around the launch: graph_end_step() once its host functions ran,
    // whichever way the step ends (its error, if a host function met one, comes out there).
    struct HybridStep {
        ExpertRunner* runner;
        Stream& stream;
        bool open = false;
        void end() {
            open = false;
            runner->graph_end_step();
        }
        ~HybridStep() {
            if (!open) return;
            try {
                stream.synchronize();
                runner->graph_end_step();
            } catch (const std::exception&) {  // the step's own error is on its way out
            }
        }
    } hybrid_step{runner_, *stream_};
    if (e.hybrid) {
        runner_->graph_begin_step(key.batch, pool);
        hybrid_step.open = true;
    }
    fill_graph_inputs(e, steps, layout);
    if (!e.graph.empty() && e.generation == graph_ctx_->scratch_generation()) {
        e.graph.launch(*graph_ctx_);
    } else {
        // This step runs eagerly, which also sizes every scratch buffer the capture will use;
        // then the same work is recorded (not run) for the next steps with this key.
        decode_body(e, key);
        try {
            e.graph = cuda::Graph::capture(*graph_ctx_, [&] { decode_body(e, key); });
            e.generation = graph_ctx_->scratch_generation();
            log_debug(c.architecture, " on ", device_.name(), ": a decode step of ", key.batch,
                      " sequences (", key.max_keys, " keys) captured in a CUDA graph",
                      e.hybrid ? " (routed experts on the hybrid runner)" : "");
        } catch (const Error& error) {
            log_warn(c.architecture, " on ", device_.name(),
                     ": capturing a decode step in a CUDA graph failed, decode runs without "
                     "graphs: ",
                     error.what());
            graphs_failed_ = true;  // this step's result stands: the eager run computed it
        }
    }
    OwnedTensor logits = make_tensor(DType::F32, {key.batch, c.vocab_size});
    stream_->copy_async(logits.view.data(), e.logits.data(), size_t(logits.view.bytes()),
                        CopyDirection::DeviceToHost);
    stream_->synchronize();
    if (hybrid_step.open) hybrid_step.end();
    for (const StepSequence& seq : layout.sequences)
        seq.cache->commit(seq.n_tokens);
    return logits;
}

OwnedTensor DeviceDecoder::forward(std::span<const SequenceStep> steps, ThreadPool& pool,
                                   StepRouting* routing) {
    const ModelConfig& c = config();
    const StepLayout layout = layout_step(steps, c);
    ctx_->make_current();
    if (const std::optional<DecodeGraphKey> key = graph_key(steps, layout, routing))
        return forward_graph(*key, steps, layout, pool);
    const DeviceRun run{*ctx_, arena_, &pool};
    // The runner's begin_step / end_step around the step, whichever way it ends.
    struct RunnerStep {
        ExpertRunner* runner;
        RunnerStep(ExpertRunner* r, int64_t n) : runner(r) {
            if (runner != nullptr) runner->begin_step(n);
        }
        ~RunnerStep() {
            if (runner != nullptr) runner->end_step();
        }
        RunnerStep(const RunnerStep&) = delete;
        RunnerStep& operator=(const RunnerStep&) = delete;
    } runner_step(runner_, layout.n_tokens);
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
                  c.shared_expert_ffn_dim, c.n_experts, mla_ ? mla_->widest_row() : 0, int64_t(1)});
    arena_.reserve(*stream_, device_aligned(size_t(n) * size_t(widest) * 4) * 12 +
                                 device_aligned(size_t(n_rows) * size_t(hidden) * 4) +
                                 device_aligned(size_t(n_rows) * size_t(c.vocab_size) * 4) +
                                 16 * kDeviceAlign);

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
        cuda::rms_norm(*ctx_, h, c.mla ? lw.mla.norm : lw.attention.norm, eps, normed);
        arena_.release_to(layer_mark);
        if (mla_)
            mla_->attention(*ctx_, arena_, lw.mla, layer, host_->inv_freq(), layout, keys, normed,
                            delta);
        else
            attention(lw, layer, layout, keys, values, normed, delta);
        cuda::add(*ctx_, h, delta, h);
        arena_.release_to(layer_mark);  // the attention's temporaries, for the FFN's
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
                            ? route_on_host(run, weights_.layers[size_t(later)].moe,
                                            host_->weights().layers[size_t(later)].moe, normed)
                            : Routing{});
                }
            }
            moe(run, layer, normed, delta, layer_routing);
        } else {
            swiglu(run, lw.dense, normed, delta);
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

std::unique_ptr<Model> make_device_model(std::unique_ptr<Model> model, Device device,
                                         const DeviceModelOptions& options) {
    if (device.kind != DeviceKind::Cuda)
        fail("device model: ", device.name(), " is not a CUDA device (cuda:N)");
    auto* decoder = dynamic_cast<Decoder*>(model.get());
    if (decoder == nullptr) fail(model->config().architecture, " does not run on ", device.name());
    model.release();
    return std::make_unique<DeviceDecoder>(std::unique_ptr<Decoder>(decoder), device, options);
}

}  // namespace tandem

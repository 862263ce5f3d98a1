#include "models/device_hybrid_graph.h"

#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/gather_copy.h"
#include "kernels/cuda/linear.h"
#include "kernels/error.h"
#include "kernels/stream.h"

namespace tandem {
namespace {

size_t aligned(size_t bytes) {
    return (bytes + 255) / 256 * 256;
}

}  // namespace

// One MoE layer: the host functions' argument (the runner, the layer, its io) at an address fixed
// for the graph's life, and where each table lives on both sides.
struct HybridDecodeGraph::Layer {
    ExpertRunner* runner = nullptr;
    int moe_layer = 0;
    GraphLayerIo io;
    Buffer host;    // page-locked: [tables | x | partial]
    Buffer device;  // [tables | partial]
    size_t table_bytes = 0, partial_at = 0;
    std::unique_ptr<cuda::DeviceExpertTable> table;  // writable, over the mirror's entries

    // The device mirror's address of a table in `host`.
    template <class T>
    T* mirror(T* in_host) const {
        const auto offset = size_t(reinterpret_cast<const std::byte*>(in_host) -
                                   static_cast<const std::byte*>(host.data()));
        return reinterpret_cast<T*>(static_cast<std::byte*>(device.data()) + offset);
    }

    static void begin(void* self) {
        auto* l = static_cast<Layer*>(self);
        l->runner->graph_begin_layer(l->moe_layer, l->io);
    }
    static void end(void* self) {
        auto* l = static_cast<Layer*>(self);
        l->runner->graph_end_layer(l->moe_layer, l->io);
    }
};

bool HybridDecodeGraph::supported(const ModelConfig& config,
                                  std::span<const MoeWeights* const> layers, int64_t n_tokens) {
    // The routed kernels read weights from tables and compute SwiGLU: gpt-oss's clamped
    // activation and expert biases take the eager steps (cuda::moe_experts).
    if (n_tokens < 1 || n_tokens > cuda::kGemvMaxTokens ||
        n_tokens * config.n_experts_active > cuda::kMaxRoutedSlots || config.swiglu_limit > 0.0)
        return false;
    for (const MoeWeights* layer : layers)
        if (layer->experts.empty() || !cuda::writable_table_supported(layer->experts[0]))
            return false;
    return true;
}

HybridDecodeGraph::HybridDecodeGraph(Device device, ExpertRunner& runner, const ModelConfig& config,
                                     std::span<const MoeWeights* const> layers, int64_t n_tokens)
    : n_tokens_(n_tokens), hidden_(config.hidden_dim), k_(config.n_experts_active) {
    const int64_t n = n_tokens, slots = n * k_, experts = config.n_experts;
    const int64_t demand = graph_demand_capacity(n, k_), prefetch = graph_prefetch_capacity(n, k_);
    const size_t rows = size_t(n * hidden_) * sizeof(float);
    for (size_t i = 0; i < layers.size(); ++i) {
        auto l = std::make_unique<Layer>();
        l->runner = &runner;
        l->moe_layer = int(i);
        // Tables, each 256-byte aligned: ids, weights, entries, counts, demand, prefetch.
        const size_t sizes[] = {size_t(slots) * 4,
                                size_t(slots) * 4,
                                size_t(experts) * sizeof(ExpertTableEntry),
                                2 * sizeof(int32_t),
                                size_t(demand) * sizeof(ExpertCopy),
                                size_t(prefetch) * sizeof(ExpertCopy)};
        size_t offsets[6], at = 0;
        for (int t = 0; t < 6; ++t) {
            offsets[t] = at;
            at += aligned(sizes[t]);
        }
        l->table_bytes = at;
        const size_t x_at = at;
        l->partial_at = x_at + aligned(rows);
        l->host = allocate_pinned(device, l->partial_at + aligned(rows));
        l->device = allocate(device, l->table_bytes + aligned(rows));
        auto* base = static_cast<std::byte*>(l->host.data());
        l->io = {.n_tokens = n,
                 .x = reinterpret_cast<float*>(base + x_at),
                 .ids = reinterpret_cast<int32_t*>(base + offsets[0]),
                 .weights = reinterpret_cast<float*>(base + offsets[1]),
                 .entries = reinterpret_cast<ExpertTableEntry*>(base + offsets[2]),
                 .n_copies = reinterpret_cast<int32_t*>(base + offsets[3]),
                 .demand = reinterpret_cast<ExpertCopy*>(base + offsets[4]),
                 .prefetch = reinterpret_cast<ExpertCopy*>(base + offsets[5]),
                 .max_demand = demand,
                 .max_prefetch = prefetch,
                 .partial = reinterpret_cast<float*>(base + l->partial_at)};
        const cpu::ExpertWeights& like = layers[i]->experts[0];
        l->table = std::make_unique<cuda::DeviceExpertTable>(l->mirror(l->io.entries), experts,
                                                             hidden_, like.gate.dim(0),
                                                             like.gate.dtype(), like.down.dtype());
        layers_.push_back(std::move(l));
    }
}

HybridDecodeGraph::~HybridDecodeGraph() = default;

void HybridDecodeGraph::record(cuda::Context& ctx, cuda::Branch& branch, int moe_layer,
                               const Tensor& x, const Tensor& out) {
    if (moe_layer < 0 || size_t(moe_layer) >= layers_.size() || x.dim(0) != n_tokens_)
        fail("hybrid decode graph: MoE layer ", moe_layer, " of ", layers_.size(), " with ",
             x.dim(0), " rows, made for ", n_tokens_);
    Layer& l = *layers_[size_t(moe_layer)];
    Stream& stream = ctx.stream();
    const size_t rows = size_t(n_tokens_ * hidden_) * sizeof(float);
    const Device device = x.device();
    // The rows down; the plan, the routing and the lists written by the host; the tables up.
    stream.copy_async(l.io.x, x.data(), rows, CopyDirection::DeviceToHost);
    cuda::host_call(ctx, &Layer::begin, &l);
    stream.copy_async(l.device.data(), l.host.data(), l.table_bytes, CopyDirection::HostToDevice);
    // The demand copies, after the last layer's prefetches (both may name one slot).
    if (branch_open_) branch.join(ctx);
    cuda::gather_copies(ctx.native_stream(), l.mirror(l.io.demand), l.mirror(l.io.n_copies),
                        l.io.max_demand);
    // The prefetches beside the device's experts (their victims are not this layer's experts:
    // the runner pins them).
    branch.fork(ctx);
    cuda::gather_copies(branch.side_stream(), l.mirror(l.io.prefetch), l.mirror(l.io.n_copies) + 1,
                        l.io.max_prefetch);
    branch_open_ = true;
    const Tensor ids(l.mirror(l.io.ids), DType::I32, {n_tokens_, k_}, device);
    const Tensor weights(l.mirror(l.io.weights), DType::F32, {n_tokens_, k_}, device);
    cuda::moe_experts_routed(ctx, *l.table,
                             {.x = x, .out = out, .expert_ids = ids, .expert_weights = weights});
    // The CPU's experts joined; their sum up and added.
    cuda::host_call(ctx, &Layer::end, &l);
    const Tensor partial(static_cast<std::byte*>(l.device.data()) + l.table_bytes, DType::F32,
                         {n_tokens_, hidden_}, device);
    stream.copy_async(partial.data(), l.io.partial, rows, CopyDirection::HostToDevice);
    cuda::add(ctx, out, partial, out);
}

void HybridDecodeGraph::finish(cuda::Context& ctx, cuda::Branch& branch) {
    if (branch_open_) branch.join(ctx);
    branch_open_ = false;
}

}  // namespace tandem

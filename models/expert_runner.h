// ExpertRunner: where a MoE layer's routed experts run. Model code routes each token (or lets a
// replayed trace choose, see replace_routing) and hands the routing to the runner; the engine's
// hybrid executor (engine/src/hybrid_executor.h) splits the experts between the CPU pool and a
// device. Without a runner the decoder runs every expert on the CPU with the fused kernel.
//
// Call order, on one thread: bind() whenever the weights change (before the first step and after
// a weight reload), then per forward step begin_step(), per MoE layer in model order
// [replace_routing()] and run(), and end_step().
// Non-goals: attention, dense FFNs and shared experts stay with the model.
#pragma once

#include <cstdint>
#include <span>

#include "kernels/expert_tables.h"
#include "kernels/tensor.h"
#include "kernels/thread_pool.h"
#include "scheduler/routing.h"

namespace tandem {

struct ModelConfig;
struct MoeWeights;

struct MoeLayerCall {
    int layer = 0;      // model layer index
    int moe_layer = 0;  // index among the MoE layers (the cache's and the traces' numbering)
    const MoeWeights* weights = nullptr;
    Tensor x;  // [n_tokens, hidden_dim] f32, the normed input
    const Routing* routing = nullptr;
    // The routers of MoE layers moe_layer + 1 .. + lookahead() applied to x (the gate lookahead),
    // one entry per later MoE layer; fewer near the end of the model.
    std::span<const Routing> predicted = {};
    Tensor out;  // [n_tokens, hidden_dim] f32: the routed experts' weighted sum is added here
    // Optional, when the model runs on the runner's device: x there, and an output there into
    // which the runner may add its device's experts directly (the rest goes into `out`; the caller
    // adds the two). Both must be ready when run() is called and are done with when it returns.
    Tensor device_x = {};
    Tensor device_out = {};
};

// One MoE layer of a decode step captured in a CUDA graph (models/device_decoder.cpp): page-locked
// host memory at addresses fixed for the graph's life, which the step's copies and the runner's
// host functions exchange. In stream order, per MoE layer: the layer's normed rows are copied into
// x; graph_begin_layer (a host function) routes them, plans, writes the routing, the device's
// expert table and the copy lists, and starts the CPU's experts; those tables are copied to the
// device; the demand copies run (cuda::gather_copies), then the device's experts (the routing
// through the table: an expert with a null entry is the CPU's); the prefetches run on a branch
// that joins before the next MoE layer's copies; graph_end_layer (a host function) waits for the
// CPU's experts, whose sum is in `partial`; it is copied up and added to the layer's output.
struct GraphLayerIo {
    int64_t n_tokens = 0;
    float* x = nullptr;                   // [n_tokens, hidden_dim] in
    int32_t* ids = nullptr;               // [n_tokens, k] out: the routing (-1: no expert)
    float* weights = nullptr;             // [n_tokens, k] out
    ExpertTableEntry* entries = nullptr;  // [n_experts] out
    int32_t* n_copies = nullptr;          // [2] out: used entries of demand and prefetch
    ExpertCopy* demand = nullptr;         // [max_demand] out
    ExpertCopy* prefetch = nullptr;       // [max_prefetch] out
    int64_t max_demand = 0, max_prefetch = 0;
    float* partial = nullptr;  // [n_tokens, hidden_dim] out: the CPU's experts' sum
};

// Copy-list capacities for n_tokens x top-k: three copies per expert (gate, up, down), at most
// n_tokens * k experts per layer, and prefetches for up to three later layers.
inline int64_t graph_demand_capacity(int64_t n_tokens, int64_t k) {
    return 3 * n_tokens * k;
}
inline int64_t graph_prefetch_capacity(int64_t n_tokens, int64_t k) {
    return 9 * n_tokens * k;
}

class ExpertRunner {
  public:
    virtual ~ExpertRunner() = default;
    // The MoE layers' weights in model order (moe_layers[i] is MoE layer i), valid until the next
    // bind(). Residency built on earlier weights is dropped.
    virtual void bind(const ModelConfig& config, std::span<const MoeWeights* const> moe_layers) = 0;
    // How many later MoE layers' routers the decoder applies to each MoE layer's input (0..3).
    virtual int lookahead() const { return 0; }
    virtual void begin_step(int64_t n_tokens) {}
    // Replaces the router's choice for this layer (routing replay); false: keep the router's.
    virtual bool replace_routing(int moe_layer, int64_t n_tokens, Routing& routing) {
        return false;
    }
    virtual void run(const MoeLayerCall& call, ThreadPool& pool) = 0;
    // The step is over (whether or not it succeeded).
    virtual void end_step() {}
    // The weights given to bind() are about to go away (the model is being destroyed): finish
    // every queued use of them, e.g. copies still in flight, before returning.
    virtual void drain() {}

    // Captured decode steps (GraphLayerIo above). A runner that can be driven from host
    // functions answers true; the step then calls graph_begin_step (on the model's thread, before
    // the launch), per MoE layer graph_begin_layer and graph_end_layer (on the CUDA driver's
    // callback thread, in stream order: they must not call CUDA), and graph_end_step once the
    // step's work has run, which rethrows the first error the host functions met (they cannot
    // throw: after an error they write tables that make the device do nothing).
    virtual bool graph_capable() const { return false; }
    virtual void graph_begin_step(int64_t n_tokens, ThreadPool& pool) {}
    virtual void graph_begin_layer(int moe_layer, const GraphLayerIo& io) noexcept {}
    virtual void graph_end_layer(int moe_layer, const GraphLayerIo& io) noexcept {}
    virtual void graph_end_step() {}
};

}  // namespace tandem

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
};

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
};

}  // namespace tandem

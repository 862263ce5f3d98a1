// The what-if simulation behind tandem-sim: replays a routing trace through an expert cache, a
// planner and (optionally) the prefetcher, on the cost model of a hardware profile, and predicts
// decode time per token (TBT), time to first token (TTFT) for a prompt, hit rate and traffic.
//
// Time model, per decode token and MoE layer: the dense part (attention, router) runs on the GPU
// at its bandwidth, or on the CPU at its own when the modelled engine keeps it there
// (SimConfig.attention_on_gpu); then the planner's makespan for the layer's experts, where copies
// issued earlier (prefetches, or demand copies of the previous layer) occupy the copy engine and a
// prefetched expert still in flight delays its GPU job; the lm_head once per token. The CPU is
// idle during attention (no overlap of a layer's experts with the next layer's attention, as in
// the paper's per-layer scheduling).
// A demand copy the cache refuses (admission, cache/expert_cache.h) is computed on the device from
// a transient slot and not cached, as in the executor.
// Caches start warm with the experts most activated over the whole trace (the profile static
// uses; the same start for every policy keeps them comparable). Hits are counted when a layer
// runs, before its demand copies; an in-flight prefetch counts as a hit.
// TTFT: one prefill step of `prompt_len` tokens whose routings are the first tokens of the trace
// (the traces are decode-only), with real per-expert token counts, on a fresh warm cache; the
// dense part is timed at the GPU's FLOP rate, attention's quadratic term is ignored.
// Non-goals: prefetching during prefill; overlapping layers; modelling the executor's threads.
#pragma once

#include <cstdint>
#include <string>

#include "cache/cache_policy.h"
#include "scheduler/cost_model.h"
#include "scheduler/planner.h"
#include "scheduler/routing_trace.h"

namespace tandem::sim {

struct SimPolicy {
    CachePolicyKind cache = CachePolicyKind::Mrs;
    PlannerKind planner = PlannerKind::HybriMoe;
    bool prefetch = false;
    std::string predictor = {};  // with prefetch: "oracle:ACC" or "history"

    // e.g. "mrs+hybrimoe+prefetch(oracle:0.8)"; "ktransformers-static" for the baseline below.
    std::string name() const;
    // kTransformers: a frozen set from the routing profile (the trace's most activated experts),
    // the GPU computes what is resident, the CPU the rest, nothing copied or prefetched.
    bool is_ktransformers_static() const {
        return cache == CachePolicyKind::Static && planner == PlannerKind::Static && !prefetch;
    }
};

struct SimConfig {
    const RoutingTrace& trace;
    const ModelShape& shape;
    const HardwareProfile& hw;
    double budget_ratio = 0.25;
    SimPolicy policy = {};
    int64_t prompt_len = 512;
    double mrs_alpha = 0.5;
    uint64_t seed = 1;
    // Where the modelled engine runs attention, norms, router and lm_head: the GPU (a CUDA
    // engine, kTransformers) or the CPU (Tandem today: only routed experts go to the device).
    bool attention_on_gpu = true;
};

struct SimResult {
    std::string policy;
    SimPolicy spec;
    double budget_ratio = 0;
    int64_t slots = 0;
    int64_t tokens = 0;
    double hit_rate = 0;
    int64_t prefetch_issued = 0;
    int64_t prefetch_used = 0;
    int64_t prefetch_wasted = 0;
    double tbt_ms = 0;
    double ttft_ms = 0;
    int64_t bytes_moved = 0;
    int64_t evictions = 0;
    int64_t transient_copies = 0;   // refused by the cache, computed from a transient slot
    int64_t refused_transfers = 0;  // refused, no transient slot left: run on the CPU
};

SimResult simulate(const SimConfig& config);

}  // namespace tandem::sim

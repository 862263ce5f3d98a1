// Routing replay (--replay-routing TRACE, issue #6): every MoE layer takes its experts and weights
// from a recorded routing trace instead of its router, so that the expert cache, the planner and
// the executor see real routing patterns at the model's real weight sizes (a synthetic model's
// random routers spread tokens evenly). The prefetcher's predictions come from the same named
// predictors as tandem-sim (scheduler/expert_predictor.h).
//
// Steps: a step of n rows replays trace tokens cursor..cursor+n-1, wrapping at the trace's end;
// row r is token (cursor + r) mod n_tokens at every MoE layer, whatever sequence the row belongs
// to (replay decides which experts run, not what the model computes). end_step() advances the
// cursor by n, after every layer has been served, and only then do the predictor's observe()
// calls see the step's tokens: within a step, every row is in flight.
// The wrap: each pass over the trace has its own predictor, made fresh for the first row past the
// end. It observes that pass's tokens only, so no token is predicted by a predictor that has
// observed it (history would otherwise predict the second pass from counts that include the
// tokens it predicts), every pass is predicted like the first, and with one-row steps the
// predictions are tandem-sim's. A step longer than the trace predicts all its rows past the first
// wrap with the fresh predictor.
// Threading: one step at a time, from one thread; routing() is const and may be called from
// several threads within a step, the other calls may not.
// Non-goals: prefill-specific routings (the traces are decode-only: a prompt replays consecutive
// trace tokens like any step); choosing what to prefetch (scheduler/prefetcher.h).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "cache/cache_policy.h"
#include "scheduler/expert_predictor.h"
#include "scheduler/routing.h"
#include "scheduler/routing_trace.h"

namespace tandem {

// The `count` most activated (layer, expert) pairs over the whole trace, across layers, most
// activated first (ties by layer, then expert id): the activation-frequency profile that the
// `static` policy keeps and that warms every cache at start-up.
std::vector<ExpertKey> most_activated_experts(const RoutingTrace& trace, int64_t n_experts,
                                              int64_t count);

struct RoutingReplayConfig {
    int64_t n_moe_layers = 0;      // the model's MoE layers, in model order
    int64_t n_experts = 0;         // routed experts per layer
    int64_t n_experts_active = 0;  // top-k
    // A model cut to its first MoE layers (tandem-bench --layers) replays the trace's first
    // n_moe_layers; otherwise the trace must have exactly n_moe_layers.
    bool allow_deeper_trace = false;
    std::string predictor = {};  // "oracle:ACC", "oracle" or "history" as in tandem-sim; "": none
    uint64_t seed = 1;           // of the oracle predictor's errors
};

class RoutingReplay {
  public:
    // Throws tandem::Error naming the trace's source when it does not fit the model: MoE layer
    // count, top-k, an expert id >= n_experts; or when the predictor spec is unknown.
    RoutingReplay(RoutingTrace trace, const RoutingReplayConfig& config);

    const RoutingTrace& trace() const { return *trace_; }
    int64_t cursor() const { return cursor_; }  // trace token of the next step's first row
    bool has_predictor() const { return !config_.predictor.empty(); }

    // Opens a step of n_rows rows (>= 1); the previous one must have ended.
    void begin_step(int64_t n_rows);
    int64_t step_rows() const { return rows_; }  // 0 outside a step
    // MoE layer `moe_layer` (0-based among the MoE layers) for the step's rows, in row order;
    // the trace's weights, or 1/k each when it has no probabilities.
    Routing routing(int64_t moe_layer) const;
    // What the expert cache scores for that layer (MRS): the trace's full distribution when it
    // has one (every expert, k = n_experts, unnormalised), else routing(moe_layer).
    Routing scores(int64_t moe_layer) const;
    // What the predictor, at `moe_layer` (the step's layers 0..moe_layer are known), expects at
    // `target_layer` (moe_layer + 1..3): tokens_per_expert[e] = rows predicted to pick e, the
    // input of PrefetchLayer::predicted_tokens. Needs a predictor.
    void predict(int64_t moe_layer, int64_t target_layer, std::span<int32_t> tokens_per_expert);
    // Closes the step: its tokens are observed and the cursor advances by step_rows().
    void end_step();

  private:
    int64_t token_of(int64_t row) const { return (cursor_ + row) % trace_->n_tokens(); }
    std::unique_ptr<ExpertPredictor> make_predictor() const;

    std::unique_ptr<const RoutingTrace> trace_;  // owned here: predictors keep a reference
    RoutingReplayConfig config_;
    int64_t cursor_ = 0;
    int64_t rows_ = 0;
    std::unique_ptr<ExpertPredictor> predictor_;       // this pass; observed tokens 0..cursor_-1
    std::unique_ptr<ExpertPredictor> next_predictor_;  // the next pass, in a step that wraps
    std::vector<int32_t> predicted_;                   // [n_experts_active] scratch
};

}  // namespace tandem

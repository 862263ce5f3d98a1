// Impact-driven prefetching (HybriMoE section 2, with the formula ours to define).
//
// While layer L runs, the next layers' experts are predicted (by their gates on layer L's hidden
// state in the engine, by a named predictor in tandem-sim: the prediction is an input here). For
// each predicted, non-resident expert e of a future layer j, the expected impact is
//     impact(j, e) = P(use at j) x (planned time of layer j with today's residency
//                                  - planned time of layer j if e were resident)
// using the same planner the layer will run with, fed the predicted loads. P is the chance that
// an expert predicted this many layers ahead is used, calibrated from the lookahead's recorded
// accuracy (LookaheadAccuracy: it falls with the distance). Copies are issued in descending
// impact while it exceeds a tolerance (min_impact_ms: a gain within rounding is not worth a
// copy, and the cpu-only planner's plans must issue nothing). A copy that lands after its layer
// starts is still issued when the device reaches the expert later: its impact is re-planned
// with that arrival. Impacts are computed against today's residency, each independently (a
// marginal re-evaluation after every pick costs a planner run per candidate per pick and changed
// little on the traces).
// Victims: the cache admits a prefetch only over a victim it outranks (cache/expert_cache.h);
// the victim's own expected loss is not weighed here.
// Counters: issued here; used-before-eviction and wasted are seen by the cache (it sees the
// accesses and evictions) and are combined in PrefetchCounters.
// Non-goals: choosing victims (cache/) and moving bytes (engine/).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "cache/expert_cache.h"
#include "scheduler/planner.h"

namespace tandem {

struct PrefetchLayer {
    int32_t layer = 0;
    std::span<const int32_t> predicted_tokens = {};  // [n_experts]
    std::span<const uint8_t> resident = {};  // [n_experts], in-flight copies count as resident
    double starts_in_ms = 0;                 // when the layer is predicted to start, from now
    double gpu_start_ms = 0;                 // its shared-expert GPU time
    double use_probability = 1.0;            // that a predicted expert is used at this layer
};

struct PrefetchInput {
    const CostModel& cost;
    PlannerKind planner = PlannerKind::HybriMoe;
    std::span<const PrefetchLayer> layers = {};  // L+1, L+2, L+3 (or fewer)
    double copy_free_in_ms = 0;                  // copy engine busy until, from now
    int64_t max_requests = -1;                   // e.g. slots that may be evicted; -1 = no limit
    double min_impact_ms = -1;  // issue only above this; -1: 0.1 % of one copy's time
};

struct PrefetchRequest {
    int32_t layer = 0;
    int32_t expert = 0;
    double impact_ms = 0;
    double start_ms = 0;  // on the copy engine, from now
    double finish_ms = 0;
};

// Requests in issue order (descending impact among those that fit).
std::vector<PrefetchRequest> plan_prefetches(const PrefetchInput& input);

// impact(j, e) as defined above, for one layer, with the copy on time.
double prefetch_impact_ms(const PrefetchInput& input, const PrefetchLayer& layer, int32_t expert);

// How often experts predicted d layers ahead (d = 1..max_distance) were used when their layer
// ran: the P of the expected impact. Laplace's rule (used + 1) / (predicted + 2), so 0.5 before
// any evidence.
class LookaheadAccuracy {
  public:
    explicit LookaheadAccuracy(int max_distance);
    void record(int distance, int64_t predicted, int64_t used);
    double probability(int distance) const;

  private:
    std::vector<int64_t> predicted_, used_;  // [max_distance]
};

struct PrefetchCounters {
    int64_t issued = 0;
    int64_t used = 0;    // accessed before eviction
    int64_t wasted = 0;  // evicted before any access
    double used_ratio() const { return issued ? double(used) / double(issued) : 0.0; }
};

PrefetchCounters prefetch_counters(int64_t issued, const CacheCounters& cache);

}  // namespace tandem

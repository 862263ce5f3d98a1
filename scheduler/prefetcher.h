// Impact-driven prefetching (HybriMoE section 2, with the formula ours to define).
//
// While layer L runs, the next layers' experts are predicted (by their gates on layer L's hidden
// state in the engine, by a named predictor in tandem-sim: the prediction is an input here). For
// each predicted, non-resident expert e of a future layer j:
//     impact(j, e) = planned time of layer j with today's residency
//                  - planned time of layer j if e were resident
// using the same planner the layer will run with, fed the predicted loads. Copies are issued in
// descending impact while the copy engine can finish them before layer j starts; the first
// impact <= 0 ends the list. Impacts are computed against today's residency, each independently
// (a marginal re-evaluation after every pick costs a planner run per candidate per pick and
// changed little on the traces).
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
};

struct PrefetchInput {
    const CostModel& cost;
    PlannerKind planner = PlannerKind::HybriMoe;
    std::span<const PrefetchLayer> layers = {};  // L+1, L+2, L+3 (or fewer)
    double copy_free_in_ms = 0;                  // copy engine busy until, from now
    int64_t max_requests = -1;                   // e.g. slots that may be evicted; -1 = no limit
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

// impact(j, e) as defined above, for one layer.
double prefetch_impact_ms(const PrefetchInput& input, const PrefetchLayer& layer, int32_t expert);

struct PrefetchCounters {
    int64_t issued = 0;
    int64_t used = 0;    // accessed before eviction
    int64_t wasted = 0;  // evicted before any access
    double used_ratio() const { return issued ? double(used) / double(issued) : 0.0; }
};

PrefetchCounters prefetch_counters(int64_t issued, const CacheCounters& cache);

}  // namespace tandem

#include "scheduler/prefetcher.h"

#include <algorithm>

#include "kernels/error.h"

namespace tandem {
namespace {

double layer_time(const PrefetchInput& in, const PrefetchLayer& l, std::span<const uint8_t> res,
                  LayerPlan& scratch, std::span<const double> ready = {}) {
    plan_layer(in.planner,
               {.cost = in.cost,
                .tokens = l.predicted_tokens,
                .resident = res,
                .ready_ms = ready,
                .gpu_start_ms = l.gpu_start_ms},
               scratch);
    return scratch.makespan_ms();
}

double tolerance(const PrefetchInput& in) {
    return in.min_impact_ms >= 0 ? in.min_impact_ms : 1e-3 * in.cost.transfer_ms;
}

}  // namespace

double prefetch_impact_ms(const PrefetchInput& in, const PrefetchLayer& l, int32_t expert) {
    if (l.predicted_tokens.size() != l.resident.size())
        fail("prefetcher: layer ", l.layer, ": ", l.predicted_tokens.size(), " loads but ",
             l.resident.size(), " residency flags");
    if (expert < 0 || size_t(expert) >= l.resident.size())
        fail("prefetcher: expert ", expert, " outside [0, ", l.resident.size(), ")");
    if (l.resident[size_t(expert)] || l.predicted_tokens[size_t(expert)] <= 0) return 0.0;
    LayerPlan scratch;
    const double base = layer_time(in, l, l.resident, scratch);
    std::vector<uint8_t> with(l.resident.begin(), l.resident.end());
    with[size_t(expert)] = 1;
    return l.use_probability * (base - layer_time(in, l, with, scratch));
}

LookaheadAccuracy::LookaheadAccuracy(int max_distance)
    : predicted_(size_t(std::max(max_distance, 0)), 0),
      used_(size_t(std::max(max_distance, 0)), 0) {}

void LookaheadAccuracy::record(int distance, int64_t predicted, int64_t used) {
    if (distance < 1 || size_t(distance) > predicted_.size() || used < 0 || used > predicted)
        fail("lookahead accuracy: distance ", distance, " (1..", predicted_.size(), "), ", used,
             " used of ", predicted, " predicted");
    predicted_[size_t(distance - 1)] += predicted;
    used_[size_t(distance - 1)] += used;
}

double LookaheadAccuracy::probability(int distance) const {
    if (distance < 1 || size_t(distance) > predicted_.size())
        fail("lookahead accuracy: distance ", distance, " outside 1..", predicted_.size());
    const size_t d = size_t(distance - 1);
    return double(used_[d] + 1) / double(predicted_[d] + 2);
}

std::vector<PrefetchRequest> plan_prefetches(const PrefetchInput& in) {
    std::vector<PrefetchRequest> candidates;
    LayerPlan scratch;
    std::vector<uint8_t> with;
    std::vector<double> ready;
    const double tol = tolerance(in);
    for (const PrefetchLayer& l : in.layers) {
        if (l.predicted_tokens.size() != l.resident.size())
            fail("prefetcher: layer ", l.layer, ": ", l.predicted_tokens.size(), " loads but ",
                 l.resident.size(), " residency flags");
        const double base = layer_time(in, l, l.resident, scratch);
        with.assign(l.resident.begin(), l.resident.end());
        for (size_t e = 0; e < l.resident.size(); ++e) {
            if (l.resident[e] || l.predicted_tokens[e] <= 0) continue;
            with[e] = 1;
            const double impact = l.use_probability * (base - layer_time(in, l, with, scratch));
            with[e] = 0;
            if (impact > tol)
                candidates.push_back({.layer = l.layer, .expert = int32_t(e), .impact_ms = impact});
        }
    }
    // Descending impact; among equals the nearer layer, whose deadline is tighter.
    std::stable_sort(candidates.begin(), candidates.end(),
                     [](const PrefetchRequest& a, const PrefetchRequest& b) {
                         if (a.impact_ms != b.impact_ms) return a.impact_ms > b.impact_ms;
                         return a.layer < b.layer;
                     });
    std::vector<PrefetchRequest> issued;
    double t = in.copy_free_in_ms;
    for (PrefetchRequest& r : candidates) {
        if (in.max_requests >= 0 && int64_t(issued.size()) >= in.max_requests) break;
        const auto& l = *std::find_if(in.layers.begin(), in.layers.end(),
                                      [&](const PrefetchLayer& x) { return x.layer == r.layer; });
        // A copy that lands after its layer starts still helps if the device reaches the
        // expert later than that: re-planned with the late arrival.
        const double finish = t + in.cost.transfer_ms;
        if (finish > l.starts_in_ms) {
            with.assign(l.resident.begin(), l.resident.end());
            const double base = layer_time(in, l, with, scratch);
            with[size_t(r.expert)] = 1;
            ready.assign(with.size(), 0.0);
            ready[size_t(r.expert)] = finish - l.starts_in_ms;
            r.impact_ms = l.use_probability * (base - layer_time(in, l, with, scratch, ready));
            if (r.impact_ms <= tol) continue;
        }
        r.start_ms = t;
        t += in.cost.transfer_ms;
        r.finish_ms = t;
        issued.push_back(r);
    }
    return issued;
}

PrefetchCounters prefetch_counters(int64_t issued, const CacheCounters& cache) {
    return {.issued = issued, .used = cache.prefetch_used, .wasted = cache.prefetch_wasted};
}

}  // namespace tandem

#include "scheduler/prefetcher.h"

#include <algorithm>

#include "kernels/error.h"

namespace tandem {
namespace {

double layer_time(const PrefetchInput& in, const PrefetchLayer& l, std::span<const uint8_t> res,
                  LayerPlan& scratch) {
    plan_layer(in.planner,
               {.cost = in.cost,
                .tokens = l.predicted_tokens,
                .resident = res,
                .gpu_start_ms = l.gpu_start_ms},
               scratch);
    return scratch.makespan_ms();
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
    return base - layer_time(in, l, with, scratch);
}

std::vector<PrefetchRequest> plan_prefetches(const PrefetchInput& in) {
    std::vector<PrefetchRequest> candidates;
    LayerPlan scratch;
    std::vector<uint8_t> with;
    for (const PrefetchLayer& l : in.layers) {
        if (l.predicted_tokens.size() != l.resident.size())
            fail("prefetcher: layer ", l.layer, ": ", l.predicted_tokens.size(), " loads but ",
                 l.resident.size(), " residency flags");
        const double base = layer_time(in, l, l.resident, scratch);
        with.assign(l.resident.begin(), l.resident.end());
        for (size_t e = 0; e < l.resident.size(); ++e) {
            if (l.resident[e] || l.predicted_tokens[e] <= 0) continue;
            with[e] = 1;
            const double impact = base - layer_time(in, l, with, scratch);
            with[e] = 0;
            if (impact > 0.0)
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
        // A copy that would land after its layer starts is a demand transfer's job, not ours.
        if (t + in.cost.transfer_ms > l.starts_in_ms) continue;
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

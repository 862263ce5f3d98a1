#include "tools/server/metrics.h"

#include <algorithm>
#include <sstream>

namespace tandem::server {

namespace {

std::string number(double v) {
    std::ostringstream s;
    s.precision(10);
    s << v;
    return s.str();
}

void metric(std::string& out, const std::string& name, const char* type, const std::string& help,
            double value) {
    out += "# HELP " + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
    out += name + " " + number(value) + "\n";
}

}  // namespace

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)), counts_(bounds_.size() + 1) {}

void Histogram::observe(double value) {
    const auto bucket =
        size_t(std::lower_bound(bounds_.begin(), bounds_.end(), value) - bounds_.begin());
    ++counts_[bucket];
    sum_ += value;
    ++count_;
}

void Histogram::render(std::string& out, const std::string& name, const std::string& help) const {
    out += "# HELP " + name + " " + help + "\n# TYPE " + name + " histogram\n";
    uint64_t cumulative = 0;
    for (size_t i = 0; i < bounds_.size(); ++i) {
        cumulative += counts_[i];
        out += name + "_bucket{le=\"" + number(bounds_[i]) + "\"} " + std::to_string(cumulative) +
               "\n";
    }
    out += name + "_bucket{le=\"+Inf\"} " + std::to_string(count_) + "\n";
    out += name + "_sum " + number(sum_) + "\n" + name + "_count " + std::to_string(count_) + "\n";
}

Metrics::Metrics()
    : ttft_({0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10,
             20, 40, 80}),
      tpot_({0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1,
             2.5}),
      e2e_({0.01, 0.05, 0.1, 0.3, 0.5, 0.8, 1, 1.5, 2, 2.5, 5, 10, 15, 20, 30, 40, 50, 60, 120}),
      queue_({0.001, 0.01, 0.05, 0.1, 0.3, 0.5, 1, 2.5, 5, 10, 30, 60}) {}

void Metrics::count_request(const std::string& endpoint, int status) {
    std::lock_guard lock(mutex_);
    ++requests_[{endpoint, status}];
}

void Metrics::count_abort(const std::string& reason) {
    std::lock_guard lock(mutex_);
    ++aborts_[reason];
}

void Metrics::observe_generation(const RequestOutput& out) {
    std::lock_guard lock(mutex_);
    prompt_tokens_ += uint64_t(out.prompt_tokens);
    generation_tokens_ += uint64_t(out.completion_tokens);
    const RequestTimings& t = out.timings;
    if (out.completion_tokens > 0) ttft_.observe(t.first_token_seconds);
    const int64_t later = out.completion_tokens - int64_t(out.completions.size());
    if (later > 0) tpot_.observe((t.total_seconds - t.first_token_seconds) / double(later));
    e2e_.observe(t.total_seconds);
    queue_.observe(t.queue_seconds);
}

std::string Metrics::render(const EngineStats* stats) const {
    std::string out;
    std::lock_guard lock(mutex_);
    out +=
        "# HELP tandem_requests_total HTTP requests by endpoint and status.\n"
        "# TYPE tandem_requests_total counter\n";
    for (const auto& [key, count] : requests_)
        out += "tandem_requests_total{endpoint=\"" + key.first + "\",status=\"" +
               std::to_string(key.second) + "\"} " + std::to_string(count) + "\n";
    out +=
        "# HELP tandem_requests_aborted_total Generation responses ended before their requests "
        "finished, by reason.\n"
        "# TYPE tandem_requests_aborted_total counter\n";
    for (const char* reason : {"client_gone", "shutdown"}) {
        const auto it = aborts_.find(reason);
        out += std::string("tandem_requests_aborted_total{reason=\"") + reason + "\"} " +
               std::to_string(it == aborts_.end() ? 0 : it->second) + "\n";
    }
    metric(out, "tandem_prompt_tokens_total", "counter", "Prompt tokens of finished requests.",
           double(prompt_tokens_));
    metric(out, "tandem_generation_tokens_total", "counter",
           "Generated tokens of finished requests.", double(generation_tokens_));
    ttft_.render(out, "tandem_time_to_first_token_seconds",
                 "From arrival to the first generated token.");
    tpot_.render(out, "tandem_time_per_output_token_seconds",
                 "Mean time between generated tokens after the first, per request.");
    e2e_.render(out, "tandem_e2e_request_latency_seconds", "From arrival to the last token.");
    queue_.render(out, "tandem_request_queue_time_seconds", "From arrival to admission.");
    const EngineStats s = stats ? *stats : EngineStats{};
    metric(out, "tandem_requests_waiting", "gauge", "Requests queued for admission.",
           double(s.waiting_requests));
    metric(out, "tandem_requests_running", "gauge", "Requests admitted and not finished.",
           double(s.running_requests));
    metric(out, "tandem_active_sequences", "gauge", "Sequences (samples) being generated.",
           double(s.active_sequences));
    metric(out, "tandem_kv_cache_blocks_used", "gauge", "KV cache blocks in use.",
           double(s.kv_blocks_used));
    metric(out, "tandem_kv_cache_blocks_cached", "gauge",
           "KV cache blocks no sequence holds, kept for the prefix cache (evicted on demand).",
           double(s.kv_blocks_cached));
    metric(out, "tandem_kv_cache_blocks_free", "gauge",
           "KV cache blocks no sequence holds and the prefix cache does not keep.",
           double(s.kv_blocks_free));
    metric(out, "tandem_kv_cache_blocks_total", "gauge", "KV cache blocks in all.",
           double(s.kv_blocks_total));
    metric(out, "tandem_kv_cache_usage_ratio", "gauge", "Fraction of KV cache blocks in use.",
           s.kv_blocks_total ? double(s.kv_blocks_used) / double(s.kv_blocks_total) : 0.0);
    metric(out, "tandem_engine_steps_total", "counter", "Forward steps run.",
           double(s.steps_total));
    metric(out, "tandem_prefix_cache_queries_total", "counter",
           "Prompt tokens looked up in the prefix cache at admission.",
           double(s.prefix_cache_queries));
    metric(out, "tandem_prefix_cache_hits_total", "counter",
           "Prompt tokens found in the prefix cache (their prefill skipped).",
           double(s.prefix_cache_hits));
    metric(out, "tandem_prefix_cache_hit_ratio", "gauge",
           "Prefix cache hits over queries, in tokens (0 before the first query).",
           s.prefix_cache_queries ? double(s.prefix_cache_hits) / double(s.prefix_cache_queries)
                                  : 0.0);
    metric(out, "tandem_preemptions_total", "counter",
           "Requests preempted (KV blocks freed, recomputed later) when the KV cache ran out.",
           double(s.preemptions));
    metric(out, "tandem_expert_cache_hits_total", "counter",
           "Routed experts found resident on the GPU.", double(s.expert_cache_hits));
    metric(out, "tandem_expert_cache_misses_total", "counter",
           "Routed experts not resident on the GPU.", double(s.expert_cache_misses));
    const int64_t lookups = s.expert_cache_hits + s.expert_cache_misses;
    metric(out, "tandem_expert_cache_hit_ratio", "gauge",
           "Expert cache hits over lookups (0 when every expert runs on the CPU).",
           lookups ? double(s.expert_cache_hits) / double(lookups) : 0.0);
    metric(out, "tandem_expert_cache_evictions_total", "counter",
           "Routed experts evicted from the device's expert slots.",
           double(s.expert_cache_evictions));
    metric(out, "tandem_expert_bytes_moved_total", "counter",
           "Expert weight bytes copied to the device (demand copies and prefetches).",
           double(s.expert_bytes_moved));
    metric(out, "tandem_expert_prefetches_total", "counter", "Expert prefetches issued.",
           double(s.expert_prefetches));
    metric(out, "tandem_expert_prefetches_used_total", "counter",
           "Prefetched experts used before their eviction.", double(s.expert_prefetches_used));
    metric(out, "tandem_experts_on_cpu_total", "counter",
           "Routed expert jobs computed by the CPU pool.", double(s.experts_on_cpu));
    metric(out, "tandem_experts_on_device_total", "counter",
           "Routed expert jobs computed by the expert device.", double(s.experts_on_device));
    return out;
}

}  // namespace tandem::server

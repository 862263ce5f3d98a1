// Prometheus metrics of the server, rendered as text exposition format by /metrics. Counters
// and histograms are updated by the request handlers; gauges (queue, sequences, KV use) are
// read from the engine at scrape time.
#pragma once

#include <map>
#include <mutex>
#include <string>
#include <vector>

#include <tandem/engine.h>

namespace tandem::server {

class Histogram {
  public:
    explicit Histogram(std::vector<double> bounds);
    void observe(double value);
    void render(std::string& out, const std::string& name, const std::string& help) const;

  private:
    std::vector<double> bounds_;
    std::vector<uint64_t> counts_;  // per bucket, not cumulative; the last is +Inf
    double sum_ = 0;
    uint64_t count_ = 0;
};

class Metrics {
  public:
    Metrics();
    void count_request(const std::string& endpoint, int status);
    // One finished generation request.
    void observe_generation(const RequestOutput& output);
    // A generation response ended before its requests finished: "client_gone" (the client
    // hung up) or "shutdown" (the shutdown timeout passed).
    void count_abort(const std::string& reason);
    std::string render(const EngineStats* stats) const;  // stats: null while loading

  private:
    mutable std::mutex mutex_;
    std::map<std::pair<std::string, int>, uint64_t> requests_;
    std::map<std::string, uint64_t> aborts_;
    uint64_t prompt_tokens_ = 0, generation_tokens_ = 0;
    Histogram ttft_, tpot_, e2e_, queue_;
};

}  // namespace tandem::server

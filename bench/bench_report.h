// tandem-bench's results: one row per measured configuration, printed as a markdown table (as
// llama-bench prints) and written as JSON or CSV for tools/plot_bench.py and other scripts; and
// the progress bar that long runs draw on stderr.
#pragma once

#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

namespace tandem::bench {

struct Stats {
    std::vector<double> samples;
    double mean = 0, stddev = 0, median = 0;  // stddev: sample (n - 1); 0 for one sample
};
Stats summarize(std::vector<double> samples);

struct BenchRow {
    std::string model;        // "olmoe-1b-7b" or the path's last component
    std::string model_path;   // what was loaded
    std::string weight_type;  // type of the weight matrices read per token: "bf16", "q4_k", ...
    int64_t layers = 0;
    double parameters = 0;
    std::string isa;
    int threads = 0;
    int batch = 1;  // sequences submitted together
    int64_t prompt_tokens = 0;
    int64_t gen_tokens = 0;
    int repetitions = 0;
    // Hybrid configuration; rows at ratio 0 run every expert on the CPU without a device, so
    // their planner reads "cpu-only".
    double gpu_expert_ratio = 0;
    std::string planner = "cpu-only";
    std::string cache_policy;
    bool prefetch = false;
    std::string replay_routing;         // trace file, "" when none
    std::string expert_device;          // "" (every expert on the CPU), "sim", "cuda:0"
    double expert_hit_rate = 0;         // the device's expert cache over the case's runs
    double device_expert_fraction = 0;  // expert jobs computed by the device
    int64_t prefetches = 0;             // issued over the case's runs
    int64_t prefetches_used = 0;        // of those, accessed before eviction
    Stats prefill_tps;           // prompt tokens of all sequences / time to the last first token
    Stats decode_tps;            // tokens after that point / the time they took (empty: n = 0)
    double bandwidth_gbps = 0;   // read-only stream, this machine, these threads
    double bytes_per_token = 0;  // weights read to decode one token of one sequence
    double bytes_per_step = 0;   // weights read by one decode step of `batch` sequences
    double bound_tps = 0;        // batch * bandwidth / bytes_per_step
    double bound_fraction = 0;   // median decode tokens/s / bound_tps
};

void print_markdown(std::FILE* out, const std::vector<BenchRow>& rows);
// Both throw tandem::Error when the file cannot be written.
void write_json(const std::string& path, const std::vector<BenchRow>& rows,
                const std::string& command_line);
void write_csv(const std::string& path, const std::vector<BenchRow>& rows);

// A one-line bar redrawn in place on stderr when it is a terminal (or when forced), with the
// elapsed time and an estimate of what is left.
class ProgressBar {
  public:
    ProgressBar(int total, bool enabled);
    void update(int done, const std::string& label);
    void finish();

  private:
    int total_;
    bool enabled_;
    std::chrono::steady_clock::time_point start_;
};

}  // namespace tandem::bench

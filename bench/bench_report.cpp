#include "bench/bench_report.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "kernels/error.h"

namespace tandem::bench {

Stats summarize(std::vector<double> samples) {
    Stats s;
    s.samples = samples;
    if (samples.empty()) return s;
    const double n = double(samples.size());
    for (double v : samples)
        s.mean += v / n;
    for (double v : samples)
        s.stddev += (v - s.mean) * (v - s.mean);
    s.stddev = samples.size() > 1 ? std::sqrt(s.stddev / (n - 1)) : 0.0;
    std::sort(samples.begin(), samples.end());
    const size_t m = samples.size() / 2;
    s.median = samples.size() % 2 ? samples[m] : (samples[m - 1] + samples[m]) / 2;
    return s;
}

namespace {

std::string format(const char* fmt, auto... args) {
    char buf[256];
    std::snprintf(buf, sizeof buf, fmt, args...);
    return buf;
}

std::string mean_sd(const Stats& s) {
    if (s.samples.empty()) return "-";
    return format("%.2f ± %.2f", s.mean, s.stddev);
}

nlohmann::json stats_json(const Stats& s) {
    if (s.samples.empty()) return nullptr;
    return {{"mean", s.mean}, {"stddev", s.stddev}, {"median", s.median}, {"samples", s.samples}};
}

}  // namespace

void print_markdown(std::FILE* out, const std::vector<BenchRow>& rows) {
    const std::vector<std::string> header = {
        "model",      "type",    "params",    "isa",       "t",           "b",
        "p",          "n",       "gpu ratio", "planner",   "prefill t/s", "decode t/s",
        "decode med", "BW GB/s", "MB/token",  "bound t/s", "of bound"};
    std::vector<std::vector<std::string>> cells;
    for (const BenchRow& r : rows) {
        const bool decoded = !r.decode_tps.samples.empty();
        cells.push_back({
            format("%s (%lld L)", r.model.c_str(), (long long)r.layers),
            r.weight_type,
            format("%.2f B", r.parameters / 1e9),
            r.isa,
            std::to_string(r.threads),
            std::to_string(r.batch),
            std::to_string(r.prompt_tokens),
            std::to_string(r.gen_tokens),
            format("%.2f", r.gpu_expert_ratio),
            r.expert_device.empty()
                ? r.planner
                : format("%s (%s: %.0f %% hits, %.0f %% of experts, %lld/%lld prefetches used)",
                         r.planner.c_str(), r.expert_device.c_str(), 100 * r.expert_hit_rate,
                         100 * r.device_expert_fraction, (long long)r.prefetches_used,
                         (long long)r.prefetches),
            mean_sd(r.prefill_tps),
            mean_sd(r.decode_tps),
            decoded ? format("%.2f", r.decode_tps.median) : "-",
            format("%.1f", r.bandwidth_gbps),
            format("%.1f", r.bytes_per_token / 1e6),
            format("%.1f", r.bound_tps),
            decoded ? format("%.0f %%", 100 * r.bound_fraction) : "-",
        });
    }
    // "±" is two bytes and one column: pad by what the eye sees.
    auto shown = [](const std::string& v) {
        return v.size() - (v.find("±") != std::string::npos ? 1 : 0);
    };
    std::vector<size_t> width(header.size());
    for (size_t c = 0; c < header.size(); ++c) {
        width[c] = header[c].size();
        for (const auto& row : cells)
            width[c] = std::max(width[c], shown(row[c]));
    }
    auto line = [&](const std::vector<std::string>& v) {
        std::fprintf(out, "|");
        for (size_t c = 0; c < v.size(); ++c) {
            const std::string pad(width[c] - shown(v[c]), ' ');
            // Names left-aligned, numbers right-aligned.
            if (c < 4)
                std::fprintf(out, " %s%s |", v[c].c_str(), pad.c_str());
            else
                std::fprintf(out, " %s%s |", pad.c_str(), v[c].c_str());
        }
        std::fprintf(out, "\n");
    };
    line(header);
    std::fprintf(out, "|");
    for (size_t c = 0; c < header.size(); ++c)
        std::fprintf(out, "%s|", (std::string(width[c] + 1, '-') + (c >= 4 ? ":" : "-")).c_str());
    std::fprintf(out, "\n");
    for (const auto& row : cells)
        line(row);
    std::fflush(out);
}

void write_json(const std::string& path, const std::vector<BenchRow>& rows,
                const std::string& command_line) {
    nlohmann::ordered_json doc;
    doc["command"] = command_line;
    doc["rows"] = nlohmann::json::array();
    for (const BenchRow& r : rows) {
        doc["rows"].push_back(nlohmann::ordered_json{
            {"model", r.model},
            {"model_path", r.model_path},
            {"weight_type", r.weight_type},
            {"layers", r.layers},
            {"parameters", r.parameters},
            {"isa", r.isa},
            {"threads", r.threads},
            {"batch", r.batch},
            {"prompt_tokens", r.prompt_tokens},
            {"gen_tokens", r.gen_tokens},
            {"repetitions", r.repetitions},
            {"gpu_expert_ratio", r.gpu_expert_ratio},
            {"planner", r.planner},
            {"cache_policy", r.cache_policy},
            {"prefetch", r.prefetch},
            {"replay_routing", r.replay_routing},
            {"expert_device", r.expert_device},
            {"expert_hit_rate", r.expert_hit_rate},
            {"device_expert_fraction", r.device_expert_fraction},
            {"prefetches", r.prefetches},
            {"prefetches_used", r.prefetches_used},
            {"prefill_tps", stats_json(r.prefill_tps)},
            {"decode_tps", stats_json(r.decode_tps)},
            {"bandwidth_gbps", r.bandwidth_gbps},
            {"bytes_per_token", r.bytes_per_token},
            {"bytes_per_step", r.bytes_per_step},
            {"bound_tps", r.bound_tps},
            {"bound_fraction", r.decode_tps.samples.empty() ? nlohmann::json(nullptr)
                                                            : nlohmann::json(r.bound_fraction)},
        });
    }
    std::ofstream out(path);
    out << doc.dump(2) << "\n";
    if (!out) fail(path, ": write failed");
}

void write_csv(const std::string& path, const std::vector<BenchRow>& rows) {
    std::ofstream out(path);
    out << "model,weight_type,layers,parameters,isa,threads,batch,prompt_tokens,gen_tokens,"
           "repetitions,gpu_expert_ratio,planner,cache_policy,prefetch,replay_routing,expert_"
           "device,"
           "expert_hit_rate,device_expert_fraction,prefetches,prefetches_used,"
           "prefill_tps_mean,prefill_tps_stddev,prefill_tps_median,decode_tps_mean,"
           "decode_tps_stddev,decode_tps_median,bandwidth_gbps,bytes_per_token,bytes_per_step,"
           "bound_tps,bound_fraction\n";
    auto stats = [](const Stats& s) {
        if (s.samples.empty()) return std::string(",,");
        return format("%.4f,%.4f,%.4f", s.mean, s.stddev, s.median);
    };
    for (const BenchRow& r : rows) {
        out << r.model << ',' << r.weight_type << ',' << r.layers << ','
            << format("%.0f", r.parameters) << ',' << r.isa << ',' << r.threads << ',' << r.batch
            << ',' << r.prompt_tokens << ',' << r.gen_tokens << ',' << r.repetitions << ','
            << r.gpu_expert_ratio << ',' << r.planner << ',' << r.cache_policy << ','
            << (r.prefetch ? "on" : "off") << ',' << r.replay_routing << ',' << r.expert_device
            << ',' << r.expert_hit_rate << ',' << r.device_expert_fraction << ',' << r.prefetches
            << ',' << r.prefetches_used << ',' << stats(r.prefill_tps) << ',' << stats(r.decode_tps)
            << ','
            << format("%.3f,%.0f,%.0f,%.3f", r.bandwidth_gbps, r.bytes_per_token, r.bytes_per_step,
                      r.bound_tps)
            << ',' << (r.decode_tps.samples.empty() ? "" : format("%.4f", r.bound_fraction))
            << '\n';
    }
    if (!out) fail(path, ": write failed");
}

ProgressBar::ProgressBar(int total, bool enabled)
    : total_(total), enabled_(enabled), start_(std::chrono::steady_clock::now()) {}

void ProgressBar::update(int done, const std::string& label) {
    if (!enabled_ || total_ <= 0) return;
    const double elapsed =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    const int width = 30, filled = width * done / total_;
    const std::string eta = done > 0 ? format("%.0fs", elapsed / done * (total_ - done)) : "?";
    std::fprintf(stderr, "\r[%s%s] %d/%d %.0fs elapsed, ~%s left  %-40s",
                 std::string(size_t(filled), '#').c_str(),
                 std::string(size_t(width - filled), '.').c_str(), done, total_, elapsed,
                 eta.c_str(), label.c_str());
    std::fflush(stderr);
}

void ProgressBar::finish() {
    if (!enabled_) return;
    std::fprintf(stderr, "\r%s\r", std::string(110, ' ').c_str());
    std::fflush(stderr);
}

}  // namespace tandem::bench

// tandem-sim: trace-driven what-if simulation of expert caching, CPU/GPU planning and
// prefetching (tools/sim_engine.h has the time model).
//
//   tandem-sim --trace ../shared/traces/olmoe-decode-dev.jsonl.gz --model olmoe-1b-7b
//              --profile a6000-xeon5220r-pcie3 --budget 0.25,0.5,0.75 [--json]
// Every combination of --cache x --planner x --prefetch runs at every budget; with prefetch on,
// once per --predictor. Output: a table, or with --json one object per line and policy.
#include <unistd.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <sstream>

#include "kernels/error.h"
#include "scheduler/routing_trace.h"
#include "tools/sim_engine.h"
#include "tools/sim_models.h"

namespace {

using namespace tandem;

std::vector<std::string> split(const std::string& text) {
    std::vector<std::string> out;
    std::stringstream in(text);
    std::string item;
    while (std::getline(in, item, ','))
        if (!item.empty()) out.push_back(item);
    return out;
}

// A shipped profile's name (tools/profiles/NAME.json) or a path.
std::string profile_path(const std::string& name) {
    if (std::filesystem::exists(name)) return name;
    const std::string shipped = std::string(TANDEM_PROFILES_DIR) + "/" + name + ".json";
    if (std::filesystem::exists(shipped)) return shipped;
    fail("--profile ", name, ": neither a file nor a profile in ", TANDEM_PROFILES_DIR);
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{
        "Predict TBT, TTFT, hit rate and traffic of cache x planner x prefetch policies "
        "on a routing trace"};
    std::string trace_path, model = "olmoe-1b-7b", profile = "a6000-xeon5220r-pcie3";
    std::string budgets = "0.25,0.5,0.75", caches = "mrs,lru,lfu,static";
    std::string planners = "hybrimoe,static,fiddler,gpu-stream,cpu-only";
    std::string prefetch = "off,on", predictors = "oracle:0.8,history";
    double bits = 4.5, alpha = 0.5;
    int64_t prompt_len = 512, max_tokens = 0;
    uint64_t seed = 1;
    bool json = false;
    std::string attention = "gpu";
    app.add_option("--trace", trace_path, "routing trace (.jsonl or .jsonl.gz)")->required();
    app.add_option("--model", model, "model shape preset")->capture_default_str();
    app.add_option("--bits", bits, "bits per expert weight (4.5 = Q4_K, 16 = bf16)")
        ->capture_default_str();
    app.add_option("--profile", profile, "hardware profile: a name in tools/profiles or a path")
        ->capture_default_str();
    app.add_option("--budget", budgets, "GPU expert budgets as ratios of all routed experts")
        ->capture_default_str();
    app.add_option("--cache", caches, "cache policies: mrs, lru, lfu, static")
        ->capture_default_str();
    app.add_option("--planner", planners,
                   "planners: hybrimoe, static, fiddler, gpu-stream, cpu-only")
        ->capture_default_str();
    app.add_option("--prefetch", prefetch, "off, on or both")->capture_default_str();
    app.add_option("--predictor", predictors, "prefetch predictors: oracle:ACC, history")
        ->capture_default_str();
    app.add_option("--prompt-len", prompt_len, "prompt tokens for TTFT")->capture_default_str();
    app.add_option("--max-tokens", max_tokens, "use only the first N tokens of the trace, 0 = all")
        ->capture_default_str();
    app.add_option("--alpha", alpha, "MRS moving-average weight")->capture_default_str();
    app.add_option("--seed", seed, "seed of the oracle predictor's errors")->capture_default_str();
    app.add_flag("--json", json, "one JSON object per policy and budget, one per line");
    app.add_option("--attention", attention,
                   "where the modelled engine runs attention and the dense layers: gpu or cpu")
        ->capture_default_str();
    CLI11_PARSE(app, argc, argv);

    try {
        const auto t0 = std::chrono::steady_clock::now();
        const RoutingTrace trace = read_routing_trace(trace_path, max_tokens);
        const ModelShape shape = sim::model_preset(model, bits);
        const HardwareProfile hw = load_hardware_profile(profile_path(profile));
        if (!trace.has_weights)
            std::fprintf(stderr,
                         "tandem-sim: %s has no router probabilities: MRS scores each selected "
                         "expert 1/%lld\n",
                         trace_path.c_str(), (long long)trace.top_k);

        if (attention != "gpu" && attention != "cpu")
            fail("--attention ", attention, ": expected gpu or cpu");
        const bool attention_on_gpu = attention == "gpu";
        std::vector<sim::SimPolicy> policies;
        for (const std::string& pf : split(prefetch)) {
            if (pf != "on" && pf != "off") fail("--prefetch ", pf, ": expected on or off");
            for (const std::string& p : split(planners))
                for (const std::string& cname : split(caches)) {
                    sim::SimPolicy base{.cache = parse_cache_policy(cname),
                                        .planner = parse_planner(p)};
                    if (pf == "off") {
                        policies.push_back(base);
                        continue;
                    }
                    for (const std::string& pred : split(predictors)) {
                        sim::SimPolicy s = base;
                        s.prefetch = true;
                        s.predictor = pred;
                        policies.push_back(s);
                    }
                }
        }

        // Each configuration is reported on stderr as it finishes (a run of the README's example
        // takes minutes); on a terminal a bar below those lines shows how many are left.
        const size_t n_runs = split(budgets).size() * policies.size();
        const bool bar = isatty(STDERR_FILENO);
        size_t results_done = 0;
        auto report = [&](const sim::SimResult& r) {
            const size_t done = results_done + 1;
            const double secs =
                std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            if (bar) std::fputs("\r\033[K", stderr);  // the bar's line, for this one
            std::fprintf(stderr,
                         "tandem-sim: [%zu/%zu] budget %.0f%% %s: tbt %.3f ms, hits %.1f%% "
                         "(%.1f s)\n",
                         done, n_runs, r.budget_ratio * 100, r.policy.c_str(), r.tbt_ms,
                         100 * r.hit_rate, secs);
            if (bar && done < n_runs) {
                constexpr int kWidth = 30;
                const int filled = int(kWidth * done / n_runs);
                std::fprintf(stderr, "[%s%s] %zu/%zu configurations, %.0f s",
                             std::string(size_t(filled), '#').c_str(),
                             std::string(size_t(kWidth - filled), '.').c_str(), done, n_runs, secs);
            }
            std::fflush(stderr);
        };
        std::vector<sim::SimResult> results;
        for (const std::string& b : split(budgets)) {
            double ratio = 0;
            try {
                ratio = std::stod(b);
            } catch (const std::exception&) {
                fail("--budget ", b, ": not a number");
            }
            // The static baseline of this budget, for the speed-up column.
            double static_tbt = 0, static_ttft = 0;
            for (const sim::SimPolicy& pol : policies) {
                sim::SimResult r = sim::simulate({.trace = trace,
                                                  .shape = shape,
                                                  .hw = hw,
                                                  .budget_ratio = ratio,
                                                  .policy = pol,
                                                  .prompt_len = prompt_len,
                                                  .mrs_alpha = alpha,
                                                  .seed = seed,
                                                  .attention_on_gpu = attention_on_gpu});
                if (pol.is_ktransformers_static()) {
                    static_tbt = r.tbt_ms;
                    static_ttft = r.ttft_ms;
                }
                if (json) {
                    nlohmann::json j = {{"policy", r.policy},
                                        {"cache", cache_policy_name(pol.cache)},
                                        {"planner", planner_name(pol.planner)},
                                        {"prefetch", pol.prefetch},
                                        {"predictor", pol.predictor},
                                        {"budget_ratio", r.budget_ratio},
                                        {"slots", r.slots},
                                        {"hit_rate", r.hit_rate},
                                        {"prefetch_issued", r.prefetch_issued},
                                        {"prefetch_used", r.prefetch_used},
                                        {"prefetch_wasted", r.prefetch_wasted},
                                        {"tbt_ms", r.tbt_ms},
                                        {"ttft_ms", r.ttft_ms},
                                        {"bytes_moved", r.bytes_moved},
                                        {"transient_copies", r.transient_copies},
                                        {"attention", attention},
                                        {"tokens", r.tokens},
                                        {"model", shape.name},
                                        {"profile", hw.name}};
                    std::printf("%s\n", j.dump().c_str());
                    std::fflush(stdout);
                }
                report(r);
                ++results_done;
                results.push_back(std::move(r));
            }
            if (json) continue;
            std::printf(
                "\nbudget %.0f%% of %lld experts = %lld slots (%.2f GB); model %s at %.2f "
                "bits/weight; profile %s; %lld tokens\n",
                ratio * 100, (long long)shape.total_experts(), (long long)results.back().slots,
                double(results.back().slots * shape.expert_bytes()) / 1e9, shape.name.c_str(), bits,
                hw.name.c_str(), (long long)trace.n_tokens());
            std::printf("%-40s %7s %9s %9s %6s %9s %9s %9s %10s\n", "policy", "hit%", "pf_issued",
                        "pf_used", "used%", "tbt_ms", "xstatic", "ttft_ms", "GB_moved");
            for (const sim::SimResult& r : results) {
                if (r.budget_ratio != ratio) continue;
                std::printf(
                    "%-40s %7.2f %9lld %9lld %6.1f %9.3f %9.2f %9.1f %10.2f\n", r.policy.c_str(),
                    100 * r.hit_rate, (long long)r.prefetch_issued, (long long)r.prefetch_used,
                    r.prefetch_issued ? 100.0 * double(r.prefetch_used) / double(r.prefetch_issued)
                                      : 0.0,
                    r.tbt_ms, static_tbt > 0 ? static_tbt / r.tbt_ms : 0.0, r.ttft_ms,
                    double(r.bytes_moved) / 1e9);
            }
            if (static_ttft > 0)
                std::printf("(xstatic: TBT of ktransformers-static over this row's TBT)\n");
        }
        const double secs =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        std::fprintf(stderr, "tandem-sim: %zu runs in %.1f s\n", results.size(), secs);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "tandem-sim: %s\n", e.what());
        return 1;
    }
    return 0;
}

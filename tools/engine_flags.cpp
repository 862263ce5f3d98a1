#include "tools/hybrid_flags.h"

#include <cstdlib>

namespace tandem {

void add_hybrid_flags(CLI::App& app, EngineConfig& config) {
    const char* group = "Hybrid CPU-GPU experts";
    app.add_option("--expert-device", config.expert_device,
                   "where GPU experts run: sim (emulated), cuda:N; unset = all experts on the CPU")
        ->group(group);
    app.add_option("--gpu-expert-budget", config.gpu_expert_budget,
                   "device memory for expert slots, e.g. 8GiB (overrides --gpu-expert-ratio)")
        ->transform(CLI::AsSizeValue(false))
        ->group(group);
    app.add_option("--gpu-expert-ratio", config.gpu_expert_ratio,
                   "fraction of all routed experts the device holds")
        ->capture_default_str()
        ->group(group);
    app.add_option("--cache-policy", config.cache_policy, "mrs, lru, lfu or static")
        ->capture_default_str()
        ->group(group);
    app.add_option("--planner", config.planner, "hybrimoe, static, fiddler, gpu-stream or cpu-only")
        ->capture_default_str()
        ->group(group);
    app.add_option("--prefetch", config.prefetch, "impact-driven prefetch: on or off")
        ->transform(
            CLI::CheckedTransformer(std::map<std::string, bool>{{"on", true}, {"off", false}}))
        ->capture_default_str()
        ->group(group);
    app.add_option("--hardware-profile", config.hardware_profile,
                   "cost model from a profile (tools/profiles/*.json) instead of calibrating")
        ->group(group);
    app.add_option("--calibration-file", config.calibration_file,
                   "where calibrations are cached (default ~/.cache/tandem/calibration.json)")
        ->group(group);
    app.add_flag("--recalibrate", config.recalibrate, "measure the cost model again")->group(group);
    app.add_option("--replay-routing", config.replay_routing,
                   "take every MoE layer's experts from this routing trace (synthetic models)")
        ->group(group);
    app.add_option("--replay-predictor", config.replay_predictor,
                   "prefetch predictor under replay: oracle:ACC or history")
        ->capture_default_str()
        ->group(group);
}

void add_numa_flags(CLI::App& app, EngineConfig& config) {
    const char* group = "NUMA";
    if (const char* env = std::getenv("TANDEM_HWLOC_SYNTHETIC")) config.numa_topology = env;
    app.add_option("--numa", config.numa,
                   "routed experts split per NUMA node: auto (when there are several), off, "
                   "distribute (always)")
        ->check(CLI::IsMember({"auto", "off", "distribute"}))
        ->capture_default_str()
        ->group(group);
    app.add_option("--numa-topology", config.numa_topology,
                   "hwloc synthetic topology instead of this machine's, e.g. \"numa:2 core:4 "
                   "pu:1\" (default: $TANDEM_HWLOC_SYNTHETIC); for tests, nothing is bound")
        ->group(group);
}

}  // namespace tandem

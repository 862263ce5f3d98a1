#include "tools/engine_flags.h"

#include <cstdlib>
#include <filesystem>
#include <map>

namespace tandem {

namespace {

std::string env_or_empty(const char* name) {
    const char* value = std::getenv(name);
    return value ? value : "";
}

// The per-user cache of start-up calibrations ("": none, then each run measures again).
std::string user_calibration_file() {
    namespace fs = std::filesystem;
    fs::path dir;
    if (const std::string xdg = env_or_empty("XDG_CACHE_HOME"); !xdg.empty())
        dir = xdg;
    else if (const std::string home = env_or_empty("HOME"); !home.empty())
        dir = fs::path(home) / ".cache";
    else
        return "";
    return (dir / "tandem" / "calibration.json").string();
}

void add_threads_and_memory(CLI::App& app, EngineConfig& config) {
    const char* group = "Engine";
    app.add_option("--threads", config.n_threads,
                   "worker threads, 0 = one per physical core (capped at 4 per hardware thread)")
        ->capture_default_str()
        ->group(group);
    app.add_flag("--hyperthreads", config.hyperthreads,
                 "use the cores' hyperthreads too (--threads 0: one per hardware thread)")
        ->group(group);
    app.add_flag(
           "--no-pin", [&config](int64_t) { config.pin_threads = false; },
           "do not pin worker threads to cores")
        ->group(group);
    app.add_option("--ctx", config.context_length, "context length, 0 = the model's")
        ->capture_default_str()
        ->group(group);
    app.add_option("--device", config.device, "where the model runs: cpu or cuda:N")
        ->capture_default_str()
        ->group(group);
    app.add_flag("--cuda-graphs", config.cuda_graphs,
                 "on cuda:N, replay decode steps as CUDA graphs (not yet verified on a GPU)")
        ->group(group);
    app.add_option("--quantize", config.quantize,
                   "quantize weights at load: q8_0, q5_0, q4_0, q4_k, q5_k, q6_k, mxfp4")
        ->group(group);
    app.add_option("--cpu-isa", config.cpu_isa, "force the CPU kernels' ISA: scalar, avx2, avx512")
        ->group(group);
    app.add_flag("--batch-invariant", config.batch_invariant,
                 "logits independent of the rest of the step, bit for bit (slower prefill)")
        ->group(group);
    app.add_option("--tile-gemm", config.tile_gemm,
                   "large-M tile path: auto, never, always (default: $TANDEM_TILE_GEMM, else auto)")
        ->group(group);
    app.add_option_function<double>(
           "--kv-cache-mb",
           [&config](double mb) { config.kv_cache_bytes = int64_t(mb * 1024 * 1024); },
           "KV cache budget in MiB, 0 = default")
        ->default_str("0")
        ->group(group);
    app.add_option("--kv-cache-type", config.kv_cache_type,
                   "KV cache element type: f32, f16 (default), bf16")
        ->capture_default_str()
        ->group(group);
    app.add_flag(
           "--no-prefix-caching", [&config](int64_t) { config.prefix_caching = false; },
           "do not reuse the KV blocks of earlier prompts (automatic prefix caching is on)")
        ->group(group);
    app.add_flag("--kv-reserve-max-tokens", config.kv_reserve_max_tokens,
                 "reserve prompt + max_tokens of KV per sample at admission (no preemption, fewer "
                 "requests at once) instead of allocating as sequences grow")
        ->group(group);
    app.add_option("--max-sequences", config.max_sequences, "sequences per step")
        ->capture_default_str()
        ->group(group);
    app.add_option("--max-step-tokens", config.max_step_tokens, "tokens per step")
        ->capture_default_str()
        ->group(group);
    app.add_option("--max-waiting", config.max_waiting_requests,
                   "queued requests before submit() refuses (the server's 503)")
        ->capture_default_str()
        ->group(group);
}

void add_hybrid_flags(CLI::App& app, EngineConfig& config) {
    const char* group = "Hybrid CPU-GPU experts";
    CLI::Option* device =
        app.add_option("--expert-device", config.expert_device,
                       "where GPU experts run: sim (emulated), cuda:N; unset = all on the CPU")
            ->group(group);
    // Each of these only means something with an expert device: without one, CLI11 refuses it.
    std::vector<CLI::Option*> need_device;
    need_device.push_back(
        app.add_option("--gpu-expert-budget", config.gpu_expert_budget,
                       "device memory for expert slots, e.g. 8GiB (overrides --gpu-expert-ratio)")
            ->transform(CLI::AsSizeValue(false)));
    need_device.push_back(app.add_option("--gpu-expert-ratio", config.gpu_expert_ratio,
                                         "fraction of all routed experts the device holds")
                              ->capture_default_str());
    need_device.push_back(
        app.add_option("--cache-policy", config.cache_policy, "mrs, lru, lfu or static")
            ->capture_default_str());
    need_device.push_back(app.add_option("--planner", config.planner,
                                         "hybrimoe, static, fiddler, gpu-stream or cpu-only")
                              ->capture_default_str());
    need_device.push_back(
        app.add_option("--prefetch", config.prefetch, "impact-driven prefetch: on or off")
            ->transform(
                CLI::CheckedTransformer(std::map<std::string, bool>{{"on", true}, {"off", false}}))
            ->capture_default_str());
    need_device.push_back(
        app.add_option("--hardware-profile", config.hardware_profile,
                       "cost model from a profile (tools/profiles/*.json) instead of calibrating"));
    need_device.push_back(app.add_option(
        "--calibration-file", config.calibration_file,
        "where calibrations are cached (default $XDG_CACHE_HOME or ~/.cache/tandem/...)"));
    need_device.push_back(
        app.add_flag("--recalibrate", config.recalibrate, "measure the cost model again"));
    need_device.push_back(app.add_option("--replay-predictor", config.replay_predictor,
                                         "prefetch predictor under replay: oracle:ACC or history")
                              ->capture_default_str());
    for (CLI::Option* option : need_device)
        option->needs(device)->group(group);
    app.add_option("--replay-routing", config.replay_routing,
                   "take every MoE layer's experts from this routing trace (on the CPU without "
                   "--expert-device)")
        ->group(group);
    app.add_option("--warm-profile", config.warm_profile,
                   "routing trace whose most activated experts start on the device (and are "
                   "static's set)")
        ->group(group);
}

void add_numa_flags(CLI::App& app, EngineConfig& config) {
    const char* group = "NUMA";
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

}  // namespace

void add_engine_flags(CLI::App& app, EngineConfig& config) {
    add_threads_and_memory(app, config);
    add_hybrid_flags(app, config);
    add_numa_flags(app, config);
}

void apply_environment_defaults(EngineConfig& config) {
    if (config.tile_gemm.empty()) config.tile_gemm = env_or_empty("TANDEM_TILE_GEMM");
    if (config.numa_topology.empty()) config.numa_topology = env_or_empty("TANDEM_HWLOC_SYNTHETIC");
    if (!config.expert_device.empty() && config.calibration_file.empty())
        config.calibration_file = user_calibration_file();
}

void finish_engine_flags(EngineConfig& config) {
    apply_environment_defaults(config);
    check_engine_config(config);
}

std::string version_line(const std::string& tool) {
    return tool + " " + std::string(version());
}

}  // namespace tandem

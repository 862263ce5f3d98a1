#include "engine/src/hybrid_setup.h"

#include <optional>

#include "engine/src/calibration_cache.h"
#include "engine/src/cpu_runner.h"
#include "kernels/dtype.h"
#include "kernels/error.h"
#include "kernels/log.h"
#include "models/decoder.h"

namespace tandem {
namespace {

int64_t moe_layer_count(const ModelConfig& c) {
    int64_t n = 0;
    for (bool moe : c.layer_is_moe)
        n += moe;
    return n;
}

std::unique_ptr<RoutingReplay> make_replay(const EngineConfig& config, const ModelConfig& mc) {
    if (config.replay_routing.empty()) return nullptr;
    if (!mc.is_moe())
        fail("EngineConfig.replay_routing: ", mc.architecture, " has no routed experts");
    // Predictions only feed the device's prefetcher.
    const bool predict = !config.expert_device.empty() && config.prefetch;
    auto replay = std::make_unique<RoutingReplay>(
        read_routing_trace(config.replay_routing),
        RoutingReplayConfig{.n_moe_layers = moe_layer_count(mc),
                            .n_experts = mc.n_experts,
                            .n_experts_active = mc.n_experts_active,
                            .allow_deeper_trace = true,
                            .predictor = predict ? config.replay_predictor : ""});
    log_info("replaying the routing of ", config.replay_routing, " (", replay->trace().n_tokens(),
             " tokens, ", replay->trace().n_layers, " MoE layers) on ", moe_layer_count(mc),
             " MoE layers");
    return replay;
}

std::unique_ptr<HybridExecutor> make_hybrid_executor(const EngineConfig& config, Model& model,
                                                     ThreadPool& pool, RoutingReplay* replay,
                                                     NumaPools* numa) {
    const ModelConfig& mc = model.config();
    if (!mc.is_moe())
        fail("EngineConfig.expert_device: ", mc.architecture,
             " has no routed experts to place on a device");
    HybridOptions options;
    options.device = parse_device(config.expert_device);
    if (config.gpu_expert_budget < -1)
        fail("EngineConfig.gpu_expert_budget: ", config.gpu_expert_budget,
             " (bytes, or -1 to use gpu_expert_ratio)");
    if (!(config.gpu_expert_ratio >= 0 && config.gpu_expert_ratio <= 1))
        fail("EngineConfig.gpu_expert_ratio: ", config.gpu_expert_ratio, " is not in [0, 1]");
    options.budget_bytes = config.gpu_expert_budget;
    options.budget_ratio = config.gpu_expert_ratio;
    options.cache_policy = parse_cache_policy(config.cache_policy);
    options.planner = parse_planner(config.planner);
    options.prefetch = config.prefetch;
    options.replay = replay;
    options.numa = numa;
    // A routing profile: what `static` keeps and every policy starts from.
    std::optional<RoutingTrace> profile;
    if (!config.warm_profile.empty()) {
        profile = read_routing_trace(config.warm_profile);
        if (profile->max_expert >= mc.n_experts)
            fail("EngineConfig.warm_profile: ", config.warm_profile, " routes to expert ",
                 profile->max_expert, ", but ", mc.architecture, " has ", mc.n_experts);
    }
    const RoutingTrace* warm_from = profile ? &*profile : replay ? &replay->trace() : nullptr;
    if (warm_from) {
        const int64_t n_moe = moe_layer_count(mc);
        for (ExpertKey key :
             most_activated_experts(*warm_from, mc.n_experts, warm_from->n_layers * mc.n_experts))
            if (key.layer < n_moe) options.warm_set.push_back(key);  // a model cut in depth
    }
    auto executor = std::make_unique<HybridExecutor>(options);
    model.set_expert_runner(executor.get());

    if (!config.hardware_profile.empty()) {
        const HardwareProfile hw = load_hardware_profile(config.hardware_profile);
        const ModelShape shape{.name = mc.architecture,
                               .n_moe_layers = moe_layer_count(mc),
                               .n_experts = mc.n_experts,
                               .n_experts_active = mc.n_experts_active,
                               .hidden_dim = mc.hidden_dim,
                               .expert_ffn_dim = mc.expert_ffn_dim,
                               .bits_per_weight = 8.0 * double(executor->slot_bytes()) /
                                                  double(3 * mc.hidden_dim * mc.expert_ffn_dim)};
        executor->set_cost_model(CostModel::from_profile(hw, shape));
        log_info("hybrid cost model from the hardware profile ", config.hardware_profile);
        return executor;
    }
    const std::string file =
        config.calibration_file.empty() ? default_calibration_file() : config.calibration_file;
    const std::string key =
        calibration_key(mc,
                        cat(config.quantize.empty() ? "weights as stored" : config.quantize, ", ",
                            executor->slot_bytes(), " bytes per expert",
                            numa ? cat(", NUMA over ", numa->n_nodes(), " nodes") : ""),
                        pool.size(), options.device.name());
    std::optional<CostModel> cost;
    if (!config.recalibrate) cost = load_calibration(file, key);
    if (cost) {
        log_info("hybrid cost model from ", file);
    } else {
        cost = executor->calibrate(pool);
        save_calibration(file, key, *cost);
    }
    executor->set_cost_model(*cost);
    return executor;
}

}  // namespace

std::unique_ptr<NumaPools> make_numa_pools(const EngineConfig& config, const ModelConfig& mc) {
    if (config.numa != "auto" && config.numa != "off" && config.numa != "distribute")
        fail("EngineConfig.numa: '", config.numa, "' is not one of auto, off, distribute");
    if (config.numa == "off" || !mc.is_moe()) return nullptr;
    const std::shared_ptr<const CpuTopology> topology =
        config.numa_topology.empty() ? CpuTopology::system()
                                     : CpuTopology::synthetic(config.numa_topology);
    if (config.numa == "auto" && topology->nodes().size() < 2) return nullptr;
    return std::make_unique<NumaPools>(NumaPoolsOptions{
        .topology = topology, .n_threads = config.n_threads, .pin = config.pin_threads});
}

ExpertRunners make_expert_runners(const EngineConfig& config, Model& model, ThreadPool& pool) {
    ExpertRunners r;
    r.numa = make_numa_pools(config, model.config());
    r.replay = make_replay(config, model.config());
    try {
        if (!config.expert_device.empty()) {
            r.executor = make_hybrid_executor(config, model, pool, r.replay.get(), r.numa.get());
        } else if (r.replay || r.numa) {
            r.cpu = std::make_unique<CpuRunner>(r.replay.get(), r.numa.get());
            model.set_expert_runner(r.cpu.get());
        }
    } catch (...) {
        model.set_expert_runner(nullptr);  // the runner dies with this frame; the model lives on
        throw;
    }
    return r;
}

void add_hybrid_stats(const HybridExecutor& executor, EngineStats& s) {
    const HybridCounters c = executor.counters();
    s.expert_cache_hits = c.cache.hits;
    s.expert_cache_misses = c.cache.misses;
    s.expert_cache_evictions = c.cache.evictions;
    s.expert_bytes_moved = c.cache.bytes_moved + c.transient_bytes;
    s.expert_prefetches = c.prefetch_issued;
    s.expert_prefetches_used = c.cache.prefetch_used;
    s.experts_on_cpu = c.cpu_experts;
    s.experts_on_device = c.gpu_experts;
}

}  // namespace tandem

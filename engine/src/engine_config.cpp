#include "engine/src/engine_config.h"

#include <algorithm>
#include <filesystem>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "cache/cache_policy.h"
#include "kernels/error.h"
#include "kernels/kv_rows.h"
#include "scheduler/planner.h"

namespace tandem {

namespace {

constexpr int kMinThreadCap = 64;
constexpr int kThreadCapPerHardwareThread = 4;

// Collects "field: message" lines; each check runs even when an earlier one failed, so that one
// error names every bad field.
class FieldErrors {
  public:
    template <class... Parts>
    void add(const char* field, const Parts&... parts) {
        lines_.push_back(cat(field, ": ", parts...));
    }
    // Runs `parse`; a tandem::Error it throws becomes `field`'s line.
    template <class T>
    std::optional<T> parse(const char* field, const std::function<T()>& parse) {
        try {
            return parse();
        } catch (const Error& e) {
            add(field, e.what());
            return std::nullopt;
        }
    }
    void throw_if_any() const {
        if (lines_.empty()) return;
        std::string message =
            cat("EngineConfig: ", lines_.size(), " bad field", lines_.size() == 1 ? "" : "s", ":");
        for (const std::string& line : lines_)
            message += "\n  " + line;
        throw Error(message);
    }

  private:
    std::vector<std::string> lines_;
};

std::optional<cpu::TileGemmPolicy> parse_tile_gemm(const std::string& text) {
    if (text.empty()) return std::nullopt;
    if (text == "auto") return cpu::TileGemmPolicy::Auto;
    if (text == "never") return cpu::TileGemmPolicy::Never;
    if (text == "always") return cpu::TileGemmPolicy::Always;
    fail("'", text, "' is not one of auto, never, always");
}

// "history", "oracle" or "oracle:ACC" with ACC in [0, 1] (scheduler/expert_predictor.h, which
// needs the trace to build one; the spelling is checked here).
void check_predictor(const std::string& spec) {
    if (spec == "history" || spec == "oracle") return;
    if (spec.rfind("oracle:", 0) == 0) {
        size_t used = 0;
        double acc = -1;
        try {
            acc = std::stod(spec.substr(7), &used);
        } catch (const std::exception&) {
            used = 0;
        }
        if (used == spec.size() - 7 && acc >= 0.0 && acc <= 1.0) return;
    }
    fail("'", spec, "' is not oracle:ACC (ACC in [0, 1]), oracle or history");
}

// The fields that only mean something with an expert device, and whether each differs from
// its default.
std::vector<const char*> hybrid_fields_set(const EngineConfig& c) {
    const EngineConfig d;
    std::vector<const char*> set;
    if (c.gpu_expert_budget != d.gpu_expert_budget) set.push_back("gpu_expert_budget");
    if (c.gpu_expert_ratio != d.gpu_expert_ratio) set.push_back("gpu_expert_ratio");
    if (c.cache_policy != d.cache_policy) set.push_back("cache_policy");
    if (c.planner != d.planner) set.push_back("planner");
    if (c.prefetch != d.prefetch) set.push_back("prefetch");
    if (c.hardware_profile != d.hardware_profile) set.push_back("hardware_profile");
    if (c.calibration_file != d.calibration_file) set.push_back("calibration_file");
    if (c.recalibrate != d.recalibrate) set.push_back("recalibrate");
    if (c.replay_predictor != d.replay_predictor) set.push_back("replay_predictor");
    if (c.warm_profile != d.warm_profile) set.push_back("warm_profile");
    return set;
}

}  // namespace

int max_engine_threads() {
    const int hardware = int(std::thread::hardware_concurrency());
    return std::max(kMinThreadCap, kThreadCapPerHardwareThread * hardware);
}

ParsedEngineConfig parse_engine_config(const EngineConfig& config) {
    ParsedEngineConfig parsed;
    FieldErrors errors;

    if (config.model_dir.empty())
        errors.add("model_dir", "empty");
    else if (!std::filesystem::exists(config.model_dir))
        errors.add("model_dir", "'", config.model_dir, "' does not exist");
    if (config.n_threads < 0)
        errors.add("n_threads", config.n_threads, " is negative (0: one per physical core)");
    else if (config.n_threads > max_engine_threads())
        errors.add("n_threads", config.n_threads, " is above the cap of ", max_engine_threads(),
                   " (4 per hardware thread of this machine, at least 64)");
    if (config.context_length < 0)
        errors.add("context_length", config.context_length, " is negative (0: the model's)");
    if (config.kv_cache_bytes < 0)
        errors.add("kv_cache_bytes", config.kv_cache_bytes, " is negative (0: the default)");
    if (config.kv_block_size <= 0)
        errors.add("kv_block_size", config.kv_block_size, " is not positive");
    if (config.max_sequences <= 0)
        errors.add("max_sequences", config.max_sequences, " is not positive");
    if (config.max_step_tokens <= 0)
        errors.add("max_step_tokens", config.max_step_tokens, " is not positive");
    if (config.max_waiting_requests < 0)
        errors.add("max_waiting_requests", config.max_waiting_requests, " is negative");

    if (auto device = errors.parse<Device>("device", [&] { return parse_device(config.device); })) {
        if (device->kind == DeviceKind::Sim)
            errors.add("device", "'", config.device, "': the model runs on cpu or cuda:N");
        else
            parsed.device = *device;
    }
    if (!config.quantize.empty()) {
        const std::optional<DType> q = dtype_from_name(config.quantize);
        if (q && is_quantized_weight_type(*q))
            parsed.quantize = q;
        else
            errors.add("quantize", "'", config.quantize,
                       "' is not one of q8_0, q5_0, q4_0, q4_k, q5_k, q6_k, mxfp4");
    }
    if (const std::optional<DType> kv = dtype_from_name(config.kv_cache_type);
        kv && is_kv_cache_type(*kv))
        parsed.kv_cache_type = *kv;
    else
        errors.add("kv_cache_type", "'", config.kv_cache_type, "' is not one of f32, f16, bf16");
    if (!config.cpu_isa.empty())
        parsed.cpu_isa =
            errors.parse<cpu::CpuIsa>("cpu_isa", [&] { return cpu::parse_isa(config.cpu_isa); });
    if (auto policy = errors.parse<std::optional<cpu::TileGemmPolicy>>(
            "tile_gemm", [&] { return parse_tile_gemm(config.tile_gemm); }))
        parsed.tile_gemm = *policy;
    if (config.numa != "auto" && config.numa != "off" && config.numa != "distribute")
        errors.add("numa", "'", config.numa, "' is not one of auto, off, distribute");

    // The hybrid runtime's fields: checked whether or not a device is set, and refused without
    // one (they would be ignored: a run that silently is not what was asked for).
    if (!config.expert_device.empty()) {
        if (auto d = errors.parse<Device>("expert_device",
                                          [&] { return parse_device(config.expert_device); });
            d && d->is_cpu())
            errors.add("expert_device", "'", config.expert_device,
                       "': must be sim or cuda:N, not cpu (empty: every expert on the CPU)");
    } else {
        for (const char* field : hybrid_fields_set(config))
            errors.add(field, "set, but expert_device is empty (every expert runs on the CPU)");
    }
    if (config.gpu_expert_budget < -1)
        errors.add("gpu_expert_budget", config.gpu_expert_budget,
                   " is negative (-1: use gpu_expert_ratio)");
    if (!(config.gpu_expert_ratio >= 0 && config.gpu_expert_ratio <= 1))
        errors.add("gpu_expert_ratio", config.gpu_expert_ratio, " is not in [0, 1]");
    errors.parse<CachePolicyKind>("cache_policy",
                                  [&] { return parse_cache_policy(config.cache_policy); });
    errors.parse<PlannerKind>("planner", [&] { return parse_planner(config.planner); });
    errors.parse<bool>("replay_predictor", [&] {
        check_predictor(config.replay_predictor);
        return true;
    });
    if (!config.replay_routing.empty() && !std::filesystem::exists(config.replay_routing))
        errors.add("replay_routing", "'", config.replay_routing, "' does not exist");
    if (!config.hardware_profile.empty() && !std::filesystem::exists(config.hardware_profile))
        errors.add("hardware_profile", "'", config.hardware_profile, "' does not exist");

    errors.throw_if_any();
    return parsed;
}

void check_engine_config(const EngineConfig& config) {
    parse_engine_config(config);
}

}  // namespace tandem

#include "engine/src/calibration_cache.h"

#include <unistd.h>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <utility>

#include "kernels/error.h"
#include "kernels/log.h"
#include "models/config.h"

namespace tandem {
namespace {

std::string cpu_model_name() {
    std::ifstream in("/proc/cpuinfo");
    std::string line;
    while (std::getline(in, line))
        if (line.rfind("model name", 0) == 0) {
            const size_t colon = line.find(':');
            if (colon != std::string::npos && colon + 2 <= line.size())
                return line.substr(colon + 2);
        }
    return "unknown CPU";
}

nlohmann::json read_file(const std::string& file) {
    std::ifstream in(file);
    if (!in) return nlohmann::json::object();
    try {
        nlohmann::json j = nlohmann::json::parse(in);
        if (j.is_object()) return j;
    } catch (const std::exception&) {
    }
    log_warn(file, ": not a calibration file; it will be replaced");
    return nlohmann::json::object();
}

constexpr std::pair<const char*, double CostModel::*> kFields[] = {
    {"cpu_a_ms", &CostModel::cpu_a_ms},         {"cpu_b_ms", &CostModel::cpu_b_ms},
    {"cpu_first_ms", &CostModel::cpu_first_ms}, {"gpu_a_ms", &CostModel::gpu_a_ms},
    {"gpu_b_ms", &CostModel::gpu_b_ms},         {"transfer_ms", &CostModel::transfer_ms},
    {"shared_a_ms", &CostModel::shared_a_ms},   {"shared_b_ms", &CostModel::shared_b_ms},
};

}  // namespace

std::string calibration_key(const ModelConfig& c, const std::string& weight_types, int n_threads,
                            const std::string& device) {
    return cat(cpu_model_name(), " | ", n_threads, " threads | ", device, " | hidden ",
               c.hidden_dim, " ffn ", c.expert_ffn_dim, " experts ", c.n_experts, " | ",
               weight_types);
}

// No default location: the library reads no environment (no $HOME), so an empty
// EngineConfig.calibration_file means "not cached"; the tools pass the per-user cache file.
std::string default_calibration_file() {
    return "";
}

std::optional<CostModel> load_calibration(const std::string& file, const std::string& key) {
    if (file.empty()) return std::nullopt;
    const nlohmann::json all = read_file(file);
    const auto it = all.find(key);
    if (it == all.end() || !it->is_object()) return std::nullopt;
    CostModel c;
    try {
        for (auto [name, field] : kFields)
            c.*field = it->at(name).get<double>();
    } catch (const std::exception& e) {
        log_warn(file, ": entry '", key, "' is incomplete (", e.what(), "); calibrating again");
        return std::nullopt;
    }
    return c;
}

void save_calibration(const std::string& file, const std::string& key, const CostModel& c) {
    namespace fs = std::filesystem;
    if (file.empty()) return;
    nlohmann::json all = read_file(file);
    nlohmann::json entry;
    for (auto [name, field] : kFields)
        entry[name] = c.*field;
    all[key] = entry;
    std::error_code ec;
    fs::create_directories(fs::path(file).parent_path(), ec);
    const std::string tmp = cat(file, ".tmp.", ::getpid());
    {
        std::ofstream out(tmp);
        out << all.dump(2) << '\n';
        if (!out) {
            log_warn("cannot write the calibration to ", file, "; it will be measured again");
            fs::remove(tmp, ec);
            return;
        }
    }
    fs::rename(tmp, file, ec);
    if (ec) log_warn("cannot write the calibration to ", file, ": ", ec.message());
}

}  // namespace tandem

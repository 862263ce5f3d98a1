#include "scheduler/cost_model.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <fstream>
#include <sstream>

#include "kernels/error.h"

namespace tandem {

int64_t ModelShape::expert_bytes() const {
    return int64_t(std::ceil(double(expert_params()) * bits_per_weight / 8.0));
}

namespace {

double positive(const nlohmann::json& j, const char* key, bool allow_zero) {
    if (!j.contains(key)) fail("missing key '", key, "'");
    const nlohmann::json& v = j.at(key);
    if (!v.is_number()) fail("key '", key, "': expected a number");
    const double x = v.get<double>();
    if (!std::isfinite(x) || x < 0.0 || (!allow_zero && x == 0.0))
        fail("key '", key, "': expected a ", allow_zero ? "non-negative" : "positive",
             " number, got ", x);
    return x;
}

}  // namespace

HardwareProfile parse_hardware_profile(const std::string& json_text, const std::string& source) {
    return with_context(source, [&] {
        nlohmann::json j;
        try {
            j = nlohmann::json::parse(json_text);
        } catch (const nlohmann::json::exception& e) {
            fail("not valid JSON: ", e.what());
        }
        if (!j.is_object()) fail("expected a JSON object");
        HardwareProfile hw;
        hw.name = j.value("name", std::string());
        hw.source = j.value("source", std::string());
        hw.cpu_bandwidth_gbs = positive(j, "cpu_bandwidth_gbs", false);
        hw.cpu_gflops = positive(j, "cpu_gflops", false);
        hw.cpu_expert_overhead_ms = positive(j, "cpu_expert_overhead_ms", true);
        hw.cpu_first_expert_ms = positive(j, "cpu_first_expert_ms", true);
        hw.gpu_bandwidth_gbs = positive(j, "gpu_bandwidth_gbs", false);
        hw.gpu_tflops = positive(j, "gpu_tflops", false);
        hw.gpu_expert_overhead_ms = positive(j, "gpu_expert_overhead_ms", true);
        hw.pcie_bandwidth_gbs = positive(j, "pcie_bandwidth_gbs", false);
        hw.pcie_latency_ms = positive(j, "pcie_latency_ms", true);
        hw.gpu_expert_memory_gb = positive(j, "gpu_expert_memory_gb", true);
        return hw;
    });
}

HardwareProfile load_hardware_profile(const std::string& path) {
    std::ifstream in(path);
    if (!in) fail(path, ": cannot open hardware profile");
    std::stringstream text;
    text << in.rdbuf();
    return parse_hardware_profile(text.str(), path);
}

CostModel CostModel::from_profile(const HardwareProfile& hw, const ModelShape& shape) {
    if (shape.expert_params() <= 0)
        fail("model shape ", shape.name, ": hidden_dim and expert_ffn_dim must be > 0");
    // GB/s = bytes per ns = 1e6 bytes per ms; GFLOP/s = 1e6 FLOP per ms.
    const double bytes = double(shape.expert_bytes());
    const double flops_per_token = 2.0 * double(shape.expert_params());
    CostModel c;
    c.cpu_a_ms = bytes / (hw.cpu_bandwidth_gbs * 1e6) + hw.cpu_expert_overhead_ms;
    c.cpu_b_ms = flops_per_token / (hw.cpu_gflops * 1e6);
    c.cpu_first_ms = hw.cpu_first_expert_ms;
    c.gpu_a_ms = bytes / (hw.gpu_bandwidth_gbs * 1e6) + hw.gpu_expert_overhead_ms;
    c.gpu_b_ms = flops_per_token / (hw.gpu_tflops * 1e9);
    c.transfer_ms = bytes / (hw.pcie_bandwidth_gbs * 1e6) + hw.pcie_latency_ms;
    if (shape.n_shared_experts > 0) {
        const int64_t ffn = shape.shared_ffn_dim > 0 ? shape.shared_ffn_dim : shape.expert_ffn_dim;
        // Shared experts are dense weights on the GPU, stored like the rest of the model: bf16.
        const double params = double(shape.n_shared_experts * 3 * shape.hidden_dim * ffn);
        c.shared_a_ms = params * 2.0 / (hw.gpu_bandwidth_gbs * 1e6) + hw.gpu_expert_overhead_ms;
        c.shared_b_ms = 2.0 * params / (hw.gpu_tflops * 1e9);
    }
    return c;
}

CostModel CostModel::hybrimoe_published() {
    return CostModel{.cpu_a_ms = 0.0,
                     .cpu_b_ms = 1.0,
                     .cpu_first_ms = 0.79,
                     .gpu_a_ms = 0.5,
                     .gpu_b_ms = 0.0,
                     .transfer_ms = 0.418};
}

}  // namespace tandem

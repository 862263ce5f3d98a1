#include "scheduler/cost_model.h"

#include <nlohmann/json.hpp>

#include <array>
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

namespace {

// Least squares over the columns in `use` of the rows (first, n, n * t); the others stay 0.
std::array<double, 3> least_squares(std::span<const TimingSample> samples,
                                    const std::array<bool, 3>& use) {
    std::array<size_t, 3> col{};
    size_t k = 0;
    for (size_t c = 0; c < 3; ++c)
        if (use[c]) col[k++] = c;
    // Normal equations A^T A x = A^T y, k <= 3 unknowns, by Gaussian elimination with pivoting.
    double m[3][4] = {};
    for (const TimingSample& s : samples) {
        const double row[3] = {1.0, double(s.n_experts), double(s.n_experts * s.tokens)};
        for (size_t i = 0; i < k; ++i) {
            for (size_t j = 0; j < k; ++j)
                m[i][j] += row[col[i]] * row[col[j]];
            m[i][k] += row[col[i]] * s.ms;
        }
    }
    for (size_t i = 0; i < k; ++i) {
        size_t pivot = i;
        for (size_t r = i + 1; r < k; ++r)
            if (std::fabs(m[r][i]) > std::fabs(m[pivot][i])) pivot = r;
        for (size_t j = 0; j <= k; ++j)
            std::swap(m[i][j], m[pivot][j]);
        if (std::fabs(m[i][i]) < 1e-300)
            fail(
                "cost model fit: the timed runs do not determine the model (vary experts and "
                "tokens)");
        for (size_t r = 0; r < k; ++r) {
            if (r == i) continue;
            const double f = m[r][i] / m[i][i];
            for (size_t j = i; j <= k; ++j)
                m[r][j] -= f * m[i][j];
        }
    }
    std::array<double, 3> x{};
    for (size_t i = 0; i < k; ++i)
        x[col[i]] = m[i][k] / m[i][i];
    return x;
}

CostFit fit(std::span<const TimingSample> samples, std::array<bool, 3> use) {
    static constexpr const char* kNames[3] = {"first-expert warm-up", "per-expert intercept",
                                              "per-token slope"};
    CostFit f;
    std::array<double, 3> x = least_squares(samples, use);
    // Negative coefficients are not times: clamp the most negative to 0 and refit the rest.
    while (true) {
        size_t worst = 3;
        for (size_t c = 0; c < 3; ++c)
            if (use[c] && x[c] < 0 && (worst == 3 || x[c] < x[worst])) worst = c;
        if (worst == 3) break;
        f.clamped += cat(f.clamped.empty() ? "" : "; ", kNames[worst], " fitted at ", x[worst],
                         " ms, clamped to 0");
        use[worst] = false;
        if (!use[0] && !use[1] && !use[2]) {
            x = {};
            break;
        }
        x = least_squares(samples, use);
    }
    f.first_ms = x[0];
    f.a_ms = x[1];
    f.b_ms = x[2];
    for (const TimingSample& s : samples)
        f.residual_ms.push_back(s.ms - (f.first_ms + double(s.n_experts) * f.a_ms +
                                        double(s.n_experts * s.tokens) * f.b_ms));
    return f;
}

}  // namespace

CostFit fit_cpu_times(std::span<const TimingSample> samples) {
    return fit(samples, {true, true, true});
}

CostFit fit_device_times(std::span<const TimingSample> samples) {
    return fit(samples, {false, true, true});
}

std::string describe_fit(const CostFit& f, std::span<const TimingSample> samples) {
    std::ostringstream out;
    out << f.first_ms << " ms once + " << f.a_ms << " ms per expert + " << f.b_ms
        << " ms per expert-token";
    if (!f.clamped.empty()) out << " (" << f.clamped << ")";
    for (size_t i = 0; i < samples.size() && i < f.residual_ms.size(); ++i)
        out << "; " << samples[i].n_experts << " x " << samples[i].tokens << ": measured "
            << samples[i].ms << " ms, residual " << f.residual_ms[i] << " ms";
    return out.str();
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

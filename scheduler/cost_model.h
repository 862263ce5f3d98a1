// CostModel: predicted times of one routed expert on the CPU, on the GPU, and over PCIe.
//
//   cpu(n)      = cpu_a + cpu_b * n        (+ cpu_first once per layer: the CPU pool's warm-up)
//   gpu(n)      = gpu_a + gpu_b * n
//   transfer    = expert_bytes / pcie_bandwidth + pcie_latency
//   shared(n)   = shared-expert GPU time of a step of n tokens, a GPU intercept for the planner
// These are the shapes HybriMoE observed (transfer constant, GPU nearly flat, CPU linear in
// tokens). The numbers come from a hardware profile (JSON: bandwidths, FLOP rates, fixed
// overheads) and a model shape (expert bytes, hidden_dim, expert_ffn_dim): the intercepts are
// "read the expert's weights once", the slopes "its FLOPs per token".
// Calibration: the executor measures on the machine (engine/); the least-squares fit of those
// timings, with residuals and any clamping said out loud, is here.
// Non-goals: running or timing anything.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace tandem {

// The MoE part of a model as the planner and the simulator see it.
struct ModelShape {
    std::string name = {};
    int64_t n_moe_layers = 0;
    int64_t n_experts = 0;         // routed experts per layer
    int64_t n_experts_active = 0;  // top-k
    int64_t n_shared_experts = 0;
    int64_t hidden_dim = 0;
    int64_t expert_ffn_dim = 0;
    int64_t shared_ffn_dim = 0;          // per shared expert; 0 = expert_ffn_dim
    int64_t dense_params_per_layer = 0;  // attention, norms, router: run on the GPU
    int64_t head_params = 0;             // lm_head (+ final norm), once per token
    double bits_per_weight = 16.0;       // of the expert weights as stored (4.5 for Q4_K)

    int64_t expert_params() const { return 3 * hidden_dim * expert_ffn_dim; }
    int64_t expert_bytes() const;
    int64_t total_experts() const { return n_moe_layers * n_experts; }
};

struct HardwareProfile {
    std::string name = {};
    std::string source = {};       // where the numbers come from, free text
    double cpu_bandwidth_gbs = 0;  // effective DRAM read bandwidth of the cores used
    double cpu_gflops = 0;         // effective expert-kernel rate
    double cpu_expert_overhead_ms = 0;
    double cpu_first_expert_ms = 0;  // once per layer
    double gpu_bandwidth_gbs = 0;
    double gpu_tflops = 0;
    double gpu_expert_overhead_ms = 0;  // launch and framework cost per expert
    double pcie_bandwidth_gbs = 0;      // effective host-to-device
    double pcie_latency_ms = 0;
    double gpu_expert_memory_gb = 0;  // what the GPU could give to expert slots
};

// Parses a profile; every error names `source` (a file name) and the key at fault.
HardwareProfile parse_hardware_profile(const std::string& json_text, const std::string& source);
HardwareProfile load_hardware_profile(const std::string& path);

struct CostModel {
    double cpu_a_ms = 0;
    double cpu_b_ms = 0;
    double cpu_first_ms = 0;
    double gpu_a_ms = 0;
    double gpu_b_ms = 0;
    double transfer_ms = 0;
    double shared_a_ms = 0;
    double shared_b_ms = 0;

    double cpu_ms(int64_t tokens) const { return cpu_a_ms + cpu_b_ms * double(tokens); }
    double gpu_ms(int64_t tokens) const { return gpu_a_ms + gpu_b_ms * double(tokens); }
    double shared_ms(int64_t n_tokens) const {
        return n_tokens > 0 ? shared_a_ms + shared_b_ms * double(n_tokens) : 0.0;
    }

    static CostModel from_profile(const HardwareProfile& hw, const ModelShape& shape);
    // The constants hard-coded in the published HybriMoE code (DeepSeek-V2-Lite on its authors'
    // machine): cpu = n ms + 0.79 ms once, gpu = 0.5 ms, pcie = 0.418 ms. The worked example.
    static CostModel hybrimoe_published();
};

// Calibration's fit (the executor measures, this fits): timed runs of n experts with t tokens
// each, fitted by least squares over all of them, residuals kept so that a bad fit shows.
struct TimingSample {
    int64_t n_experts = 1;
    int64_t tokens = 1;
    double ms = 0;
};

struct CostFit {
    double first_ms = 0;              // once per run: the CPU pool's warm-up; 0 for the device
    double a_ms = 0;                  // per expert
    double b_ms = 0;                  // per expert and token
    std::vector<double> residual_ms;  // [samples] measured - fitted
    // Coefficients that came out negative, with their fitted values, set to 0 and the others
    // refitted; empty when none was.
    std::string clamped;
};

// ms = first + n * a + n * t * b.
CostFit fit_cpu_times(std::span<const TimingSample> samples);
// ms = n * (a + t * b): a device launch has no warm-up of its own.
CostFit fit_device_times(std::span<const TimingSample> samples);
// The fit and one line per sample (measured, fitted, residual), for the log.
std::string describe_fit(const CostFit& fit, std::span<const TimingSample> samples);

}  // namespace tandem

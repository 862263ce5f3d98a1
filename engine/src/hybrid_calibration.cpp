// HybridExecutor::calibrate(): the cost model measured on this machine (hybrid_executor.h).
#include <algorithm>
#include <cstring>
#include <utility>

#include "engine/src/expert_slot.h"
#include "engine/src/hybrid_executor.h"
#include "kernels/error.h"
#include "kernels/log.h"
#include "models/decoder.h"

namespace tandem {
namespace {

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

}  // namespace

CostModel HybridExecutor::calibrate(ThreadPool& pool) {
    if (layers_.empty()) fail("hybrid executor: calibrate() before bind()");
    constexpr int kRuns = 7;
    constexpr int32_t kLongTokens = 16;
    const MoeWeights& layer = *layers_[0];
    const int64_t hidden = layer.experts[0].gate.dim(1);
    OwnedTensor x = make_tensor(DType::F32, {kLongTokens, hidden});
    OwnedTensor out = make_tensor(DType::F32, {kLongTokens, hidden});
    for (int64_t i = 0; i < kLongTokens * hidden; ++i)  // any activations of a plausible size
        x.view.data_as<float>()[i] = float((i * 7919) % 2001 - 1000) / 1000.0f;
    Buffer scratch = allocate(options_.device, slot_bytes_);
    // The device's copy of the activations, and its output, for the device's runs.
    const size_t rows_bytes = size_t(kLongTokens * hidden) * sizeof(float);
    Buffer device_rows = allocate(options_.device, 2 * rows_bytes);
    const Tensor x_device(device_rows.data(), DType::F32, {kLongTokens, hidden}, options_.device);
    const Tensor out_device(static_cast<std::byte*>(device_rows.data()) + rows_bytes, DType::F32,
                            {kLongTokens, hidden}, options_.device);
    compute_->copy_async(x_device.data(), x.view.data(), rows_bytes, CopyDirection::HostToDevice);
    compute_->memset_async(out_device.data(), 0, rows_bytes);
    int32_t next_expert = 0;
    // Equally cold experts for the CPU and the device: before every timed run a buffer larger
    // than a server's last-level cache is written, so both read the expert's weights from memory
    // (the device's copy lands before it). Without this the device timed an expert it had just
    // copied, from cache, against CPU experts read from memory.
    std::vector<std::byte> evict(size_t(256) << 20);
    uint8_t stamp = 0;
    const auto make_cold = [&] { std::memset(evict.data(), ++stamp, evict.size()); };

    // One timed run: `n_experts` experts with `tokens` tokens each, on the CPU pool or the device.
    auto time_run = [&](int n_experts, int32_t tokens, bool device) {
        std::vector<int32_t> offsets = {0}, index;
        std::vector<float> weight;
        std::vector<cpu::ExpertWeights> experts;
        std::vector<int32_t> chosen;
        for (int i = 0; i < n_experts; ++i) {
            experts.push_back(layer.experts[size_t(next_expert)]);
            chosen.push_back(next_expert);
            next_expert = int32_t((next_expert + 1) % n_experts_);
            for (int32_t t = 0; t < tokens; ++t) {
                index.push_back(t);
                weight.push_back(1.0f);
            }
            offsets.push_back(int32_t(index.size()));
        }
        const auto run = [&](ThreadPool& on, std::span<const cpu::ExpertWeights> w) {
            cpu::moe_experts({.x = x.view.slice_rows(0, tokens),
                              .out = out.view.slice_rows(0, tokens),
                              .experts = w,
                              .offsets = offsets,
                              .token_index = index,
                              .token_weight = weight},
                             on);
        };
        if (!device && cpu_experts_.numa()) {
            // Per node on the slice copies, as run() computes: those exist for the layer's
            // experts only, so the same experts get their tokens through whole-layer offsets.
            std::vector<int32_t> count(size_t(n_experts_), 0), layer_offsets = {0}, slots;
            for (int32_t e : chosen)
                count[size_t(e)] += tokens;
            for (int64_t e = 0; e < n_experts_; ++e) {
                for (int32_t s = 0; s < count[size_t(e)]; ++s)
                    slots.push_back(s % tokens);
                layer_offsets.push_back(int32_t(slots.size()));
            }
            const std::vector<float> ones(slots.size(), 1.0f);
            make_cold();
            const double t0 = now_ms();
            cpu_experts_.run(0,
                             {.x = x.view.slice_rows(0, tokens),
                              .out = out.view.slice_rows(0, tokens),
                              .experts = layer.experts,
                              .offsets = layer_offsets,
                              .token_index = slots,
                              .token_weight = ones},
                             pool);
            return now_ms() - t0;
        }
        if (!device) {
            make_cold();
            const double t0 = now_ms();
            run(pool, experts);
            return now_ms() - t0;
        }
        // The device computes from its memory: copy the first expert in, then time the launch
        // on the device's timeline (between two marks on the compute stream, as CUDA events
        // would), not the host's queueing.
        const cpu::ExpertWeights on_device =
            expert_at(static_cast<std::byte*>(scratch.data()), experts[0], options_.device);
        copy_expert(*copy_, on_device, experts[0]);
        copy_->synchronize();
        compute_->synchronize();
        make_cold();
        std::vector<cpu::ExpertWeights> same(size_t(n_experts), on_device);
        double t0 = 0, t1 = 0;
        compute_->launch_host([&t0] { t0 = now_ms(); });
        device_experts_->run(*compute_, {.x = x_device.slice_rows(0, tokens),
                                         .out = out_device.slice_rows(0, tokens),
                                         .experts = same,
                                         .offsets = offsets,
                                         .token_index = index,
                                         .token_weight = weight});
        compute_->launch_host([&t1] { t1 = now_ms(); });
        compute_->synchronize();
        return t1 - t0;
    };
    auto measure = [&](int n_experts, int32_t tokens, bool device) {
        time_run(n_experts, tokens, device);  // warm-up: page faults, instruction caches
        std::vector<double> runs;
        for (int r = 0; r < kRuns; ++r)
            runs.push_back(time_run(n_experts, tokens, device));
        return median(runs);
    };

    // A grid of runs, fitted by least squares over all of them (a three-point formula put every
    // timing error into one coefficient), with the residuals in the log.
    std::vector<TimingSample> cpu, dev;
    for (auto [n, t] : {std::pair{1, 1}, {1, 4}, {1, kLongTokens}, {2, 1}, {4, 1}, {4, 4}})
        cpu.push_back({.n_experts = n, .tokens = t, .ms = measure(n, t, false)});
    for (int32_t t : {1, 4, kLongTokens})
        dev.push_back({.n_experts = 1, .tokens = t, .ms = measure(1, t, true)});
    const CostFit cpu_fit = fit_cpu_times(cpu), dev_fit = fit_device_times(dev);
    CostModel c;
    c.cpu_first_ms = cpu_fit.first_ms;
    c.cpu_a_ms = cpu_fit.a_ms;
    c.cpu_b_ms = cpu_fit.b_ms;
    c.gpu_a_ms = dev_fit.a_ms;
    c.gpu_b_ms = dev_fit.b_ms;
    log_info("calibration, CPU pool: ", describe_fit(cpu_fit, cpu));
    log_info("calibration, device: ", describe_fit(dev_fit, dev));
    for (const CostFit* f : {&cpu_fit, &dev_fit})
        if (!f->clamped.empty())
            log_warn("calibration: ", f->clamped, " (timings too noisy or too small to separate)");
    std::vector<double> copies;
    for (int r = 0; r < kRuns; ++r) {
        const cpu::ExpertWeights& w = layer.experts[size_t(r % n_experts_)];
        const double t0 = now_ms();
        copy_expert(*copy_, expert_at(static_cast<std::byte*>(scratch.data()), w, options_.device),
                    w);
        copy_->synchronize();
        copies.push_back(now_ms() - t0);
    }
    c.transfer_ms = median(copies);
    log_info("calibrated the hybrid cost model: cpu ", c.cpu_a_ms, " + ", c.cpu_b_ms,
             " ms/token (first expert +", c.cpu_first_ms, " ms), device ", c.gpu_a_ms, " + ",
             c.gpu_b_ms, " ms/token, copy ", c.transfer_ms, " ms per expert");
    return c;
}

}  // namespace tandem

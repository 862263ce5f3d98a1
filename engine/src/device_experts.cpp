#include "engine/src/device_experts.h"

#include <vector>

#include "kernels/error.h"
#include "kernels/sim_device.h"
#include "kernels/thread_pool.h"

namespace tandem {
namespace {

// The sim device's expert kernel: the fused CPU kernel on one thread of the device's own (so the
// CPU pool keeps its cores), on the stream's worker, reading device memory through its backing.
class SimDeviceExperts final : public DeviceExperts {
  public:
    explicit SimDeviceExperts(Device device)
        : device_(device),
          pool_(std::make_shared<ThreadPool>(ThreadPoolOptions{.n_threads = 1, .pin = false})) {}

    Device device() const override { return device_; }

    void run(Stream& stream, const DeviceExpertsCall& call) override {
        const size_t n_experts = call.experts.size();
        if (stream.device() != device_)
            fail(device_.name(), ": device experts queued on a stream of ", stream.device().name());
        if (call.offsets.size() != n_experts + 1 ||
            (!call.skip.empty() && call.skip.size() != n_experts))
            fail(device_.name(), ": device experts: ", call.offsets.size(), " offsets and ",
                 call.skip.size(), " skip flags for ", n_experts, " experts");
        for (const Tensor* t : {&call.x, &call.out})
            if (t->device() != device_ || !t->is_contiguous())
                fail(device_.name(), ": device experts: x and out must be contiguous tensors on ",
                     device_.name(), ", not ", t->describe(), " on ", t->device().name());
        // The host arrays are copied now: the caller may reuse them once run() returns.
        Launch launch{.x = call.x,
                      .out = call.out,
                      .experts = {call.experts.begin(), call.experts.end()},
                      .offsets = {call.offsets.begin(), call.offsets.end()},
                      .token_index = {call.token_index.begin(), call.token_index.end()},
                      .token_weight = {call.token_weight.begin(), call.token_weight.end()},
                      .skip = {call.skip.begin(), call.skip.end()},
                      .glu = call.glu};
        for (size_t e = 0; e < n_experts; ++e) {
            if (!launch.runs(e)) continue;
            for (const Tensor* t :
                 {&call.experts[e].gate, &call.experts[e].up, &call.experts[e].down})
                if (t->device() != device_ || !t->is_contiguous())
                    fail(device_.name(), ": device experts: expert ", e, " is not contiguous in ",
                         device_.name(), " memory (", t->describe(), " on ", t->device().name(),
                         ")");
        }
        stream.launch_host([launch = std::move(launch), pool = pool_] {
            std::vector<cpu::ExpertWeights> experts(launch.experts.size());
            for (size_t e = 0; e < experts.size(); ++e)
                if (launch.runs(e))
                    experts[e] = {.gate = host_view(launch.experts[e].gate),
                                  .up = host_view(launch.experts[e].up),
                                  .down = host_view(launch.experts[e].down),
                                  .gate_bias = launch.experts[e].gate_bias,
                                  .up_bias = launch.experts[e].up_bias,
                                  .down_bias = launch.experts[e].down_bias};
            cpu::moe_experts({.x = host_view(launch.x),
                              .out = host_view(launch.out),
                              .experts = experts,
                              .offsets = launch.offsets,
                              .token_index = launch.token_index,
                              .token_weight = launch.token_weight,
                              .skip = launch.skip,
                              .glu = launch.glu},
                             *pool);
        });
    }

  private:
    struct Launch {
        Tensor x, out;
        std::vector<cpu::ExpertWeights> experts;
        std::vector<int32_t> offsets;
        std::vector<int32_t> token_index;
        std::vector<float> token_weight;
        std::vector<uint8_t> skip;
        cpu::GluOptions glu;
        bool runs(size_t e) const {
            return offsets[e + 1] > offsets[e] && (skip.empty() || !skip[e]);
        }
    };

    // A device tensor as the host tensor behind it; only on the stream's worker.
    static Tensor host_view(const Tensor& t) {
        return Tensor(sim_kernel_address(t.data(), size_t(t.bytes())), t.dtype(), t.shape(),
                      Device::cpu());
    }

    Device device_;
    std::shared_ptr<ThreadPool> pool_;  // shared with queued work, which may outlive this
};

}  // namespace

std::unique_ptr<DeviceExperts> make_device_experts(Device device) {
    switch (device.kind) {
        case DeviceKind::Sim: return std::make_unique<SimDeviceExperts>(device);
        case DeviceKind::Cuda: return cuda_make_device_experts(device);
        case DeviceKind::Cpu: break;
    }
    fail("device experts run on sim or cuda:N, not on ", device.name());
}

}  // namespace tandem

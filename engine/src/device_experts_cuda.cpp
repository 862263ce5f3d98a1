// The CUDA DeviceExperts (device_experts.h): cuda::moe_experts on the caller's stream. Built into
// the CUDA plugin (libtandem_cuda.so) and the GPU tests; the core reaches it through
// make_device_experts, which loads the plugin.
#include <memory>
#include <utility>
#include <vector>

#include "engine/src/device_experts.h"
#include "kernels/cuda/context.h"
#include "kernels/cuda/moe_experts.h"
#include "kernels/error.h"

namespace tandem {
namespace {

class CudaDeviceExperts final : public DeviceExperts {
  public:
    explicit CudaDeviceExperts(Device device) : device_(device) {}

    Device device() const override { return device_; }

    void run(Stream& stream, const DeviceExpertsCall& call) override {
        if (!(stream.device() == device_))
            fail("device experts of ", device_.name(), " given a stream of ",
                 stream.device().name());
        cuda::Context& ctx = context_for(stream);
        ctx.make_current();
        cuda::moe_experts(ctx, {.x = call.x,
                                .out = call.out,
                                .experts = call.experts,
                                .offsets = call.offsets,
                                .token_index = call.token_index,
                                .token_weight = call.token_weight,
                                .skip = call.skip,
                                .glu = call.glu});
    }

  private:
    // One context (cuBLAS handle, scratch) per stream the caller uses; the streams must outlive
    // this object (a context synchronizes its stream when it goes).
    cuda::Context& context_for(Stream& stream) {
        for (auto& [s, ctx] : contexts_)
            if (s == &stream) return *ctx;
        contexts_.emplace_back(&stream, std::make_unique<cuda::Context>(stream));
        return *contexts_.back().second;
    }

    Device device_;
    std::vector<std::pair<Stream*, std::unique_ptr<cuda::Context>>> contexts_;
};

}  // namespace

std::unique_ptr<DeviceExperts> cuda_make_device_experts(Device device) {
    return std::make_unique<CudaDeviceExperts>(device);
}

}  // namespace tandem

extern "C" std::unique_ptr<tandem::DeviceExperts> tandem_cuda_make_device_experts(
    tandem::Device device) {
    return tandem::cuda_make_device_experts(device);
}

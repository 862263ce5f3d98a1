// The core's cuda_make_device_experts in a CUDA build: the CUDA device experts live in the CUDA
// plugin (libtandem_cuda.so, kernels/cuda_backend.h), loaded here on first use. (Binaries that
// link the CUDA objects directly, the GPU tests, get device_experts_cuda.cpp's definition and
// never this file's.)
#include "engine/src/device_experts.h"
#include "kernels/cuda_backend.h"
#include "kernels/error.h"

namespace tandem {

std::unique_ptr<DeviceExperts> cuda_make_device_experts(Device device) {
    using Factory = decltype(&tandem_cuda_make_device_experts);
    const auto factory = with_context(device.name(), [] {
        return reinterpret_cast<Factory>(cuda_backend_symbol("tandem_cuda_make_device_experts"));
    });
    return factory(device);
}

}  // namespace tandem

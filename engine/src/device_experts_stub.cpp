// A CPU-only build's cuda_make_device_experts: there is no CUDA device to run experts on.
#include "engine/src/device_experts.h"
#include "kernels/error.h"

namespace tandem {

std::unique_ptr<DeviceExperts> cuda_make_device_experts(Device device) {
    fail(device.name(), ": this build has no CUDA backend (configure with TANDEM_CUDA=ON)");
}

}  // namespace tandem

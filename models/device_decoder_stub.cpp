// The CPU-only build's make_device_model: there is no device to move a model to.
#include "kernels/error.h"
#include "models/device_decoder.h"

namespace tandem {

std::unique_ptr<Model> make_device_model(std::unique_ptr<Model>, Device device,
                                         const DeviceModelOptions&) {
    fail(device.name(), ": this build has no CUDA backend (configure with TANDEM_CUDA=ON)");
}

}  // namespace tandem

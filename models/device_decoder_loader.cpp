// The core's make_device_model in a CUDA build: the device decoder lives in the CUDA plugin
// (libtandem_cuda.so, kernels/cuda_backend.h), loaded here on first use.
#include "kernels/cuda_backend.h"
#include "kernels/error.h"
#include "models/device_decoder.h"

namespace tandem {

std::unique_ptr<Model> make_device_model(std::unique_ptr<Model> model, Device device,
                                         const DeviceModelOptions& options) {
    using Factory = decltype(&tandem_cuda_make_device_model);
    const auto factory = with_context(device.name(), [] {
        return reinterpret_cast<Factory>(cuda_backend_symbol("tandem_cuda_make_device_model"));
    });
    return factory(std::move(model), device, options);
}

}  // namespace tandem

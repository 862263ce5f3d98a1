// The entry points of the CUDA plugin, libtandem_cuda.so (kernels/cuda_backend.h): the backend
// table of kernels/ and the device decoder's factory. The plugin is this file, the CUDA objects of
// kernels/cuda/, the device decoder, and its own copy of the core code they call; tandem_cuda.map
// exports these two functions and nothing else.
#include "kernels/build_config.h"
#include "kernels/cuda_backend.h"
#include "kernels/stream.h"
#include "models/device_decoder.h"

namespace tandem {
namespace {

// The CUDA objects' own definitions (device_query.cu, stream_cuda.cu), not the loader's: the
// loader is not linked into the plugin.
const CudaBackend kBackend{
    .abi = kCudaBackendAbi,
    .version = build::kVersion,
    .apply_settings = &apply_cuda_backend_settings,
    .query_device_count = &cuda_query_device_count,
    .malloc = &cuda_malloc,
    .free = &cuda_free,
    .make_stream = &make_cuda_stream,
    .host_alloc = &cuda_host_alloc,
    .host_free = &cuda_host_free,
    .host_register = &cuda_host_register,
    .host_unregister = &cuda_host_unregister,
};

}  // namespace
}  // namespace tandem

extern "C" const tandem::CudaBackend* tandem_cuda_backend() {
    return &tandem::kBackend;
}

// The core's loader has brought the settings up to date (cuda_backend_symbol).
extern "C" std::unique_ptr<tandem::Model> tandem_cuda_make_device_model(
    std::unique_ptr<tandem::Model> model, tandem::Device device,
    const tandem::DeviceModelOptions& options) {
    return tandem::make_device_model(std::move(model), device, options);
}

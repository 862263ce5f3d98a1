// CPU-only builds: there are no CUDA streams.
#include "kernels/error.h"
#include "kernels/stream.h"

namespace tandem {

void* cuda_malloc(Device device, size_t bytes) {
    fail(device.name(), ": cannot allocate ", bytes, " bytes: this build has no CUDA backend");
}

void cuda_free(void*) noexcept {}

std::unique_ptr<Stream> make_cuda_stream(Device device) {
    fail(device.name(), ": this build has no CUDA backend (configure with TANDEM_CUDA=ON)");
}

}  // namespace tandem

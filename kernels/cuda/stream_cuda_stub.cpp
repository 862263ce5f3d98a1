// CPU-only builds: there are no CUDA streams.
#include <string>

#include "kernels/cuda_backend.h"
#include "kernels/error.h"
#include "kernels/stream.h"

namespace tandem {

void* cuda_malloc(Device device, size_t bytes) {
    fail(device.name(), ": cannot allocate ", bytes, " bytes: this build has no CUDA backend");
}

void cuda_free(void*) noexcept {}

void* cuda_host_alloc(size_t bytes) {
    fail("cannot allocate ", bytes, " bytes of page-locked memory: this build has no CUDA backend");
}

void cuda_host_free(void*) noexcept {}

void* cuda_host_register(void*, size_t, std::string* why) {
    *why = "this build has no CUDA backend";
    return nullptr;
}

void cuda_host_unregister(void*) noexcept {}

void* cuda_backend_symbol(const char* name) {
    fail("this build has no CUDA backend (configure with TANDEM_CUDA=ON): no ", name);
}

std::unique_ptr<Stream> make_cuda_stream(Device device) {
    fail(device.name(), ": this build has no CUDA backend (configure with TANDEM_CUDA=ON)");
}

}  // namespace tandem

// CPU-only builds: there are no CUDA streams.
#include "kernels/error.h"
#include "kernels/stream.h"

namespace tandem {

std::unique_ptr<Stream> make_cuda_stream(Device device) {
    fail(device.name(), ": this build has no CUDA backend (configure with TANDEM_CUDA=ON)");
}

}  // namespace tandem

#include "kernels/buffer.h"

#include <cstdlib>
#include <new>
#include <stdexcept>

#include "kernels/error.h"
#include "kernels/sim_device.h"

namespace tandem {

// Device memory of the CUDA backend (kernels/cuda/stream_cuda.cu; the stub fails).
void* cuda_malloc(Device device, size_t bytes);
void cuda_free(void* data) noexcept;
void* cuda_host_alloc(size_t bytes);
void cuda_host_free(void* data) noexcept;

namespace {
constexpr size_t kAlignment = 64;
}

Buffer allocate(Device device, size_t bytes) {
    if (bytes == 0) return Buffer(device, nullptr, 0);
    // Plain cudaMalloc on a GPU; sim memory is not host-addressable either (kernels/sim_device.h).
    if (device.kind == DeviceKind::Cuda) {
        if (device.index >= cuda_device_count())
            fail(device.name(), ": no such CUDA device (", cuda_device_count(), " found)");
        try {
            return Buffer(device, cuda_malloc(device, bytes), bytes);
        } catch (const std::runtime_error& e) {
            fail(e.what());  // as a tandem::Error, like every other allocation failure
        }
    }
    if (device.kind == DeviceKind::Sim) return Buffer(device, sim_malloc(bytes), bytes);
    const size_t rounded = (bytes + kAlignment - 1) / kAlignment * kAlignment;
    void* data = std::aligned_alloc(kAlignment, rounded);
    if (data == nullptr) fail("cpu: out of memory allocating ", bytes, " bytes");
    return Buffer(device, data, bytes);
}

Buffer allocate_pinned(Device for_device, size_t bytes) {
    if (for_device.kind != DeviceKind::Cuda || bytes == 0) return allocate(Device::cpu(), bytes);
    try {
        return Buffer(Device::cpu(), cuda_host_alloc(bytes), bytes, true);
    } catch (const std::runtime_error& e) {
        fail(e.what());
    }
}

Buffer::~Buffer() {
    if (data_ == nullptr) return;
    if (pinned_)
        cuda_host_free(data_);
    else if (device_.kind == DeviceKind::Cuda)
        cuda_free(data_);
    else if (device_.kind == DeviceKind::Sim)
        sim_free(data_);
    else
        std::free(data_);
}

}  // namespace tandem

#include "kernels/buffer.h"

#include <cstdlib>
#include <new>

#include "kernels/error.h"

namespace tandem {

namespace {
constexpr size_t kAlignment = 64;
}

Buffer allocate(Device device, size_t bytes) {
    // sim memory is host memory (kernels/stream.h); CUDA allocation comes with the backend.
    if (device.kind == DeviceKind::Cuda)
        fail("device ", device.name(), ": allocation is not available yet");
    if (bytes == 0) return Buffer(device, nullptr, 0);
    const size_t rounded = (bytes + kAlignment - 1) / kAlignment * kAlignment;
    void* data = std::aligned_alloc(kAlignment, rounded);
    if (data == nullptr) fail("cpu: out of memory allocating ", bytes, " bytes");
    return Buffer(device, data, bytes);
}

Buffer::~Buffer() {
    if (data_ != nullptr) std::free(data_);
}

}  // namespace tandem

#include "kernels/cuda/context.h"

#include <cublas_v2.h>

#include <algorithm>

#include "kernels/cuda/cuda_check.h"

namespace tandem::cuda {

namespace {

void check_cublas(cublasStatus_t status, const char* statement) {
    if (status != CUBLAS_STATUS_SUCCESS)
        fail(statement, ": ", cublasGetStatusName(status), " (", cublasGetStatusString(status),
             ")");
}

}  // namespace

Context::Context(Stream& stream) : stream_(stream) {
    cudaStream_t native = cuda::native_stream(stream);
    TANDEM_CUDA_CHECK(cudaSetDevice(stream.device().index));
    TANDEM_CUDA_CHECK(cudaDeviceGetAttribute(&multiprocessors_, cudaDevAttrMultiProcessorCount,
                                             stream.device().index));
    cublasHandle_t handle = nullptr;
    check_cublas(cublasCreate(&handle), "cublasCreate");
    cublas_ = handle;
    check_cublas(cublasSetStream(handle, native), "cublasSetStream");
}

Context::~Context() {
    stream_.synchronize();
    if (cublas_ != nullptr) cublasDestroy(static_cast<cublasHandle_t>(cublas_));
}

void Context::make_current() const {
    TANDEM_CUDA_CHECK(cudaSetDevice(stream_.device().index));
}

void* Context::native_stream() const {
    return cuda::native_stream(stream_);
}

void* Context::cublas_handle() const {
    return cublas_;
}

void* Context::scratch(ScratchSlot slot, size_t bytes) {
    Buffer& buffer = scratch_[size_t(slot)];
    if (buffer.bytes() < bytes) {
        // Work queued before may still read the old buffer.
        stream_.synchronize();
        const size_t old_bytes = buffer.bytes();
        buffer = Buffer();
        // Grow by half again so a slowly growing request does not reallocate every step.
        buffer = allocate(device(), std::max(bytes, old_bytes + old_bytes / 2));
        ++scratch_generation_;
    }
    return buffer.data();
}

void* Context::upload(ScratchSlot slot, const void* host, size_t bytes) {
    void* device = scratch(slot, bytes);
    if (bytes > 0)
        TANDEM_CUDA_CHECK(cudaMemcpyAsync(device, host, bytes, cudaMemcpyHostToDevice,
                                          cuda::native_stream(stream_)));
    return device;
}

}  // namespace tandem::cuda

// Streams and events on a CUDA device (see kernels/stream.h). Built only with the CUDA backend;
// the CPU-only build has kernels/cuda/stream_cuda_stub.cpp.
#include <cuda_runtime.h>

#include <string>

#include "kernels/cuda_backend.h"
#include "kernels/error.h"
#include "kernels/stream.h"

namespace tandem {

namespace {

// Device::name() lives in tandem_kernels, which this library sits below in the link order.
std::string name_of(Device device) {
    return "cuda:" + std::to_string(device.index);
}

void check(cudaError_t status, const char* what, Device device) {
    if (status != cudaSuccess) fail(name_of(device), ": ", what, ": ", cudaGetErrorString(status));
}

cudaMemcpyKind kind_of(CopyDirection direction) {
    switch (direction) {
        case CopyDirection::HostToDevice: return cudaMemcpyHostToDevice;
        case CopyDirection::DeviceToHost: return cudaMemcpyDeviceToHost;
        case CopyDirection::DeviceToDevice: return cudaMemcpyDeviceToDevice;
    }
    return cudaMemcpyDefault;
}

class CudaEvent final : public Event {
  public:
    CudaEvent(Device device, cudaStream_t stream) : device_(device) {
        check(cudaEventCreateWithFlags(&event_, cudaEventDisableTiming), "cudaEventCreate", device);
        check(cudaEventRecord(event_, stream), "cudaEventRecord", device);
    }
    ~CudaEvent() override { cudaEventDestroy(event_); }
    void synchronize() override {
        check(cudaEventSynchronize(event_), "cudaEventSynchronize", device_);
    }
    bool done() override { return cudaEventQuery(event_) == cudaSuccess; }
    cudaEvent_t handle() const { return event_; }

  private:
    Device device_;
    cudaEvent_t event_ = nullptr;
};

class CudaStream final : public Stream {
  public:
    explicit CudaStream(Device device) : device_(device) {
        check(cudaSetDevice(device.index), "cudaSetDevice", device);
        check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate",
              device);
    }
    ~CudaStream() override {
        cudaStreamSynchronize(stream_);
        cudaStreamDestroy(stream_);
    }
    Device device() const override { return device_; }

    void launch_host(std::function<void()> work) override {
        auto* heap = new std::function<void()>(std::move(work));
        const cudaError_t status = cudaLaunchHostFunc(
            stream_,
            [](void* data) {
                auto* fn = static_cast<std::function<void()>*>(data);
                (*fn)();
                delete fn;
            },
            heap);
        if (status != cudaSuccess) delete heap;
        check(status, "cudaLaunchHostFunc", device_);
    }

    void copy_async(void* dst, const void* src, size_t bytes, CopyDirection direction) override {
        check(cudaMemcpyAsync(dst, src, bytes, kind_of(direction), stream_), "cudaMemcpyAsync",
              device_);
    }

    void memset_async(void* dst, int value, size_t bytes) override {
        check(cudaMemsetAsync(dst, value, bytes, stream_), "cudaMemsetAsync", device_);
    }

    std::shared_ptr<Event> record() override {
        return std::make_shared<CudaEvent>(device_, stream_);
    }

    void wait(const std::shared_ptr<Event>& event) override {
        auto* cuda_event = dynamic_cast<CudaEvent*>(event.get());
        if (cuda_event == nullptr)
            fail(name_of(device_), ": wait on an event of another device kind");
        check(cudaStreamWaitEvent(stream_, cuda_event->handle(), 0), "cudaStreamWaitEvent",
              device_);
    }

    void synchronize() override {
        check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize", device_);
    }

    void* native_handle() override { return stream_; }

  private:
    Device device_;
    cudaStream_t stream_ = nullptr;
};

}  // namespace

void* cuda_malloc(Device device, size_t bytes) {
    check(cudaSetDevice(device.index), "cudaSetDevice", device);
    void* data = nullptr;
    check(cudaMalloc(&data, bytes), "cudaMalloc", device);
    return data;
}

void cuda_free(void* data) noexcept {
    cudaFree(data);
}

void* cuda_host_alloc(size_t bytes) {
    void* data = nullptr;
    const cudaError_t status = cudaMallocHost(&data, bytes);
    if (status != cudaSuccess)
        fail("cudaMallocHost of ", bytes, " bytes failed: ", cudaGetErrorString(status));
    return data;
}

void cuda_host_free(void* data) noexcept {
    cudaFreeHost(data);
}

void* cuda_host_register(void* data, size_t bytes, std::string* why) {
    int read_only = 0;
    cudaDeviceGetAttribute(&read_only, cudaDevAttrHostRegisterReadOnlySupported, 0);
    const unsigned flags = cudaHostRegisterPortable | cudaHostRegisterMapped |
                           (read_only ? cudaHostRegisterReadOnly : 0);
    cudaError_t status = cudaHostRegister(data, bytes, flags);
    if (status == cudaSuccess) {
        void* device = nullptr;
        status = cudaHostGetDevicePointer(&device, data, 0);
        if (status == cudaSuccess) return device;
        cudaHostUnregister(data);
    }
    cudaGetLastError();  // not sticky: clear it
    *why = cat("cudaHostRegister of ", bytes, " bytes: ", cudaGetErrorString(status),
               read_only ? "" : " (this device cannot register read-only memory)");
    return nullptr;
}

void cuda_host_unregister(void* data) noexcept {
    cudaHostUnregister(data);
}

std::unique_ptr<Stream> make_cuda_stream(Device device) {
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess || device.index >= count)
        fail(name_of(device), ": no such CUDA device (this process sees ", count, ")");
    return std::make_unique<CudaStream>(device);
}

}  // namespace tandem

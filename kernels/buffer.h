// Buffer: move-only ownership of a device allocation. Tensors are views into buffers.
#pragma once

#include <cstddef>
#include <utility>

#include "kernels/device.h"

namespace tandem {

class Buffer {
  public:
    Buffer() = default;
    Buffer(const Buffer&) = delete;
    Buffer& operator=(const Buffer&) = delete;
    Buffer(Buffer&& other) noexcept { swap(other); }
    Buffer& operator=(Buffer&& other) noexcept {
        Buffer(std::move(other)).swap(*this);
        return *this;
    }
    ~Buffer();

    void* data() const { return data_; }
    size_t bytes() const { return bytes_; }
    Device device() const { return device_; }
    explicit operator bool() const { return data_ != nullptr; }

  private:
    friend Buffer allocate(Device device, size_t bytes);
    friend Buffer allocate_pinned(Device for_device, size_t bytes);
    Buffer(Device device, void* data, size_t bytes, bool pinned = false)
        : device_(device), data_(data), bytes_(bytes), pinned_(pinned) {}
    void swap(Buffer& other) noexcept {
        std::swap(device_, other.device_);
        std::swap(data_, other.data_);
        std::swap(bytes_, other.bytes_);
        std::swap(pinned_, other.pinned_);
    }

    Device device_;
    void* data_ = nullptr;
    size_t bytes_ = 0;
    bool pinned_ = false;  // page-locked host memory of the CUDA backend
};

// Host memory (device() is cpu) that `for_device` copies to and from asynchronously and at full
// speed: page-locked for cuda:N (cudaMallocHost), plain memory for sim and cpu.
Buffer allocate_pinned(Device for_device, size_t bytes);

}  // namespace tandem

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
    Buffer(Device device, void* data, size_t bytes) : device_(device), data_(data), bytes_(bytes) {}
    void swap(Buffer& other) noexcept {
        std::swap(device_, other.device_);
        std::swap(data_, other.data_);
        std::swap(bytes_, other.bytes_);
    }

    Device device_;
    void* data_ = nullptr;
    size_t bytes_ = 0;
};

}  // namespace tandem

// DeviceStepArena: a bump allocator over one device buffer, reset every step, so a forward step
// on a CUDA device gets its activations without a cudaMalloc (and the device-wide
// synchronisation of its cudaFree) per tensor. Used by the device decoder and its MLA block.
#pragma once

#include <cstddef>

#include "kernels/buffer.h"
#include "kernels/error.h"
#include "kernels/stream.h"
#include "kernels/tensor.h"

namespace tandem {

inline constexpr size_t kDeviceAlign = 256;  // cudaMalloc's alignment, kept for every tensor

inline size_t device_aligned(size_t bytes) {
    return (bytes + kDeviceAlign - 1) / kDeviceAlign * kDeviceAlign;
}

class DeviceStepArena {
  public:
    void reserve(Stream& stream, size_t bytes) {
        if (buffer_.bytes() < bytes) {
            stream.synchronize();  // the last step's kernels may still read the old buffer
            buffer_ = Buffer();
            buffer_ = allocate(stream.device(), bytes);
        }
        used_ = 0;
    }
    // Everything handed out after mark() is free again after release_to(mark): stream order
    // keeps the next layer's kernels behind this layer's.
    size_t mark() const { return used_; }
    void release_to(size_t mark) { used_ = mark; }
    Tensor tensor(Shape shape, DType dtype = DType::F32) {
        const size_t bytes =
            device_aligned(size_t(shape.numel()) * size_t(dtype_block_bytes(dtype)));
        if (used_ + bytes > buffer_.bytes())
            fail("device step arena: ", used_ + bytes, " bytes asked of ", buffer_.bytes());
        Tensor t(static_cast<std::byte*>(buffer_.data()) + used_, dtype, shape, buffer_.device());
        used_ += bytes;
        return t;
    }

  private:
    Buffer buffer_;
    size_t used_ = 0;
};

}  // namespace tandem

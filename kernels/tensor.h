// Tensor: a non-owning view of memory as an n-dimensional array.
//
// Shape is outermost-first, as safetensors and PyTorch write it: a weight of a Linear layer
// mapping k inputs to m outputs is [m, k]. Strides are in elements. The view never owns memory;
// OwnedTensor pairs a view with the Buffer it looks into.
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>

#include "kernels/buffer.h"
#include "kernels/device.h"
#include "kernels/dtype.h"

namespace tandem {

inline constexpr int kMaxRank = 4;

struct Shape {
    int rank = 0;
    std::array<int64_t, kMaxRank> dims{};

    Shape() = default;
    Shape(std::initializer_list<int64_t> list);
    static Shape from(std::span<const int64_t> list);  // throws if rank > kMaxRank

    int64_t operator[](int i) const { return dims[size_t(i)]; }
    int64_t numel() const;
    std::string str() const;  // "[8, 64, 128]"
    friend bool operator==(const Shape& a, const Shape& b);
};

class Tensor {
  public:
    Tensor() = default;
    // A contiguous (row-major) view.
    Tensor(void* data, DType dtype, Shape shape, Device device = Device::cpu());

    void* data() const { return data_; }
    template <class T>
    T* data_as() const {
        return static_cast<T*>(data_);
    }
    DType dtype() const { return dtype_; }
    Device device() const { return device_; }
    const Shape& shape() const { return shape_; }
    int rank() const { return shape_.rank; }
    int64_t dim(int i) const { return shape_[i]; }
    int64_t stride(int i) const { return strides_[size_t(i)]; }
    int64_t numel() const { return shape_.numel(); }
    int64_t bytes() const;  // of a contiguous view
    bool is_contiguous() const;
    bool empty() const { return data_ == nullptr; }

    // The i-th slice along the outermost dimension, rank reduced by one.
    Tensor operator[](int64_t i) const;
    // Rows [begin, end) along the outermost dimension, same rank.
    Tensor slice_rows(int64_t begin, int64_t end) const;
    // Same data, another contiguous shape of equal numel.
    Tensor reshape(Shape shape) const;

    std::string describe() const;  // "[64, 128] bf16"

  private:
    int64_t offset_bytes(int64_t elements) const;

    void* data_ = nullptr;
    DType dtype_ = DType::F32;
    Device device_;
    Shape shape_;
    std::array<int64_t, kMaxRank> strides_{};
};

// A tensor together with the buffer it views.
struct OwnedTensor {
    Buffer buffer;
    Tensor view;

    const Tensor& operator*() const { return view; }
    const Tensor* operator->() const { return &view; }
};

OwnedTensor make_tensor(DType dtype, Shape shape, Device device = Device::cpu());

}  // namespace tandem

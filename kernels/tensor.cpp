#include "kernels/tensor.h"

#include <sstream>

#include "kernels/error.h"

namespace tandem {

Shape::Shape(std::initializer_list<int64_t> list) {
    if (list.size() > size_t(kMaxRank)) fail("tensor rank ", list.size(), " exceeds ", kMaxRank);
    for (int64_t d : list)
        dims[size_t(rank++)] = d;
}

Shape Shape::from(std::span<const int64_t> list) {
    if (list.size() > size_t(kMaxRank)) fail("tensor rank ", list.size(), " exceeds ", kMaxRank);
    Shape shape;
    for (int64_t d : list)
        shape.dims[size_t(shape.rank++)] = d;
    return shape;
}

int64_t Shape::numel() const {
    int64_t n = 1;
    for (int i = 0; i < rank; ++i)
        n *= dims[size_t(i)];
    return n;
}

std::string Shape::str() const {
    std::ostringstream out;
    out << '[';
    for (int i = 0; i < rank; ++i)
        out << (i ? ", " : "") << dims[size_t(i)];
    out << ']';
    return out.str();
}

bool operator==(const Shape& a, const Shape& b) {
    if (a.rank != b.rank) return false;
    for (int i = 0; i < a.rank; ++i)
        if (a[i] != b[i]) return false;
    return true;
}

Tensor::Tensor(void* data, DType dtype, Shape shape, Device device)
    : data_(data), dtype_(dtype), device_(device), shape_(shape) {
    int64_t stride = 1;
    for (int i = shape_.rank - 1; i >= 0; --i) {
        strides_[size_t(i)] = stride;
        stride *= shape_[i];
    }
}

int64_t Tensor::bytes() const {
    if (rank() == 0) return dtype_block_bytes(dtype_);
    if (numel() == 0) return 0;
    return numel() / dim(rank() - 1) * row_bytes(dtype_, dim(rank() - 1));
}

bool Tensor::is_contiguous() const {
    int64_t stride = 1;
    for (int i = rank() - 1; i >= 0; --i) {
        if (dim(i) != 1 && strides_[size_t(i)] != stride) return false;
        stride *= dim(i);
    }
    return true;
}

int64_t Tensor::offset_bytes(int64_t elements) const {
    // Block-quantized rows are whole blocks: an outer stride is always a multiple of the block.
    return elements / dtype_block_size(dtype_) * dtype_block_bytes(dtype_);
}

Tensor Tensor::operator[](int64_t i) const {
    if (rank() == 0 || i < 0 || i >= dim(0))
        fail("index ", i, " out of range for tensor ", describe());
    Tensor out;
    out.dtype_ = dtype_;
    out.device_ = device_;
    out.data_ = static_cast<std::byte*>(data_) + offset_bytes(i * strides_[0]);
    out.shape_.rank = rank() - 1;
    for (int d = 1; d < rank(); ++d) {
        out.shape_.dims[size_t(d - 1)] = dim(d);
        out.strides_[size_t(d - 1)] = strides_[size_t(d)];
    }
    return out;
}

Tensor Tensor::slice_rows(int64_t begin, int64_t end) const {
    if (rank() == 0 || begin < 0 || end < begin || end > dim(0))
        fail("rows [", begin, ", ", end, ") out of range for tensor ", describe());
    Tensor out = *this;
    out.data_ = static_cast<std::byte*>(data_) + offset_bytes(begin * strides_[0]);
    out.shape_.dims[0] = end - begin;
    return out;
}

Tensor Tensor::reshape(Shape shape) const {
    if (!is_contiguous()) fail("reshape of a non-contiguous tensor ", describe());
    if (shape.numel() != numel()) fail("cannot reshape ", describe(), " to ", shape.str());
    return Tensor(data_, dtype_, shape, device_);
}

std::string Tensor::describe() const {
    return cat(shape_.str(), ' ', dtype_name(dtype_));
}

OwnedTensor make_tensor(DType dtype, Shape shape, Device device) {
    Tensor probe(nullptr, dtype, shape, device);
    Buffer buffer = allocate(device, size_t(probe.bytes()));
    Tensor view(buffer.data(), dtype, shape, device);
    return {std::move(buffer), view};
}

}  // namespace tandem

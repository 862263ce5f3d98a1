#include "tests/gpu/gpu_test_util.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels/error.h"

namespace tandem::test {

OwnedTensor upload_bytes(const void* host, size_t bytes, DType dtype, Shape shape, Stream& stream) {
    OwnedTensor t = make_tensor(dtype, shape, stream.device());
    if (size_t(t->bytes()) != bytes)
        fail("upload: ", bytes, " host bytes for a ", t->describe(), " tensor of ", t->bytes());
    stream.copy_async(t->data(), host, bytes, CopyDirection::HostToDevice);
    stream.synchronize();
    return t;
}

OwnedTensor poisoned(DType dtype, Shape shape, Stream& stream) {
    OwnedTensor t = make_tensor(dtype, shape, stream.device());
    const std::vector<uint8_t> poison(size_t(t->bytes()), 0xFF);
    stream.copy_async(t->data(), poison.data(), poison.size(), CopyDirection::HostToDevice);
    stream.synchronize();
    return t;
}

std::vector<uint8_t> download_bytes(const Tensor& device, Stream& stream) {
    std::vector<uint8_t> out(size_t(device.bytes()));
    stream.copy_async(out.data(), device.data(), out.size(), CopyDirection::DeviceToHost);
    stream.synchronize();
    return out;
}

namespace {

template <class Ref>
double rel_error(const std::vector<float>& a, const std::vector<Ref>& b, double floor) {
    if (a.size() != b.size()) fail("max_rel_error: sizes ", a.size(), " and ", b.size());
    double scale = floor, worst = 0;
    for (const Ref v : b)
        scale = std::max(scale, std::abs(double(v)));
    for (size_t i = 0; i < a.size(); ++i) {
        const double d = std::abs(double(a[i]) - double(b[i]));
        if (std::isnan(d)) return std::numeric_limits<double>::infinity();
        worst = std::max(worst, d);
    }
    return worst / scale;
}

}  // namespace

double max_rel_error(const std::vector<float>& a, const std::vector<double>& b, double floor) {
    return rel_error(a, b, floor);
}

double max_rel_error(const std::vector<float>& a, const std::vector<float>& b, double floor) {
    return rel_error(a, b, floor);
}

}  // namespace tandem::test

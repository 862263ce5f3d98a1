#include "tests/gpu/gpu_test_util.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>

#include "kernels/cpu/quant.h"
#include "kernels/cuda/quant_dot.h"
#include "kernels/error.h"
#include "tests/test_util.h"

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

WorstError worst_error(const std::vector<float>& a, const std::vector<double>& b, double floor) {
    if (a.size() != b.size()) fail("worst_error: sizes ", a.size(), " and ", b.size());
    double scale = floor;
    for (const double v : b)
        scale = std::max(scale, std::abs(v));
    WorstError worst;
    for (size_t i = 0; i < a.size(); ++i) {
        double d = std::abs(double(a[i]) - b[i]) / scale;
        if (std::isnan(d)) d = std::numeric_limits<double>::infinity();
        if (d > worst.error || (i == 0 && d >= worst.error))
            worst = {.error = d, .index = i, .got = a[i], .want = b[i]};
        if (std::isinf(d)) break;
    }
    return worst;
}

std::string WorstError::str(int64_t row_length) const {
    std::ostringstream out;
    out << "worst normalised error " << error << " at element " << index << " (row "
        << int64_t(index) / row_length << ", column " << int64_t(index) % row_length << "): got "
        << got << ", want " << want;
    return out.str();
}

HostWeights random_weights(DType type, int64_t rows, int64_t k, std::mt19937_64& rng, float std) {
    const std::vector<float> x = random_floats(rng, size_t(rows * k), std);
    HostWeights w;
    w.bytes.resize(size_t(rows * row_bytes(type, k)));
    w.values.resize(size_t(rows * k));
    for (int64_t i = 0; i < rows * k; ++i) {
        uint16_t bits = 0;
        switch (type) {
            case DType::F32:
                std::memcpy(w.bytes.data() + 4 * i, &x[size_t(i)], 4);
                w.values[size_t(i)] = x[size_t(i)];
                break;
            case DType::F16:
                bits = f32_to_f16(x[size_t(i)]);
                std::memcpy(w.bytes.data() + 2 * i, &bits, 2);
                w.values[size_t(i)] = f16_to_f32(bits);
                break;
            case DType::BF16:
                bits = f32_to_bf16(x[size_t(i)]);
                std::memcpy(w.bytes.data() + 2 * i, &bits, 2);
                w.values[size_t(i)] = bf16_to_f32(bits);
                break;
            default: break;
        }
    }
    if (is_quantized_weight_type(type)) {
        const int64_t rb = row_bytes(type, k);
        for (int64_t r = 0; r < rows; ++r) {
            cpu::quantize_row(type, x.data() + r * k, w.bytes.data() + r * rb, k);
            cpu::dequantize_row(type, w.bytes.data() + r * rb, w.values.data() + r * k, k);
        }
    }
    return w;
}

std::vector<float> q8_rounded(const std::vector<float>& x) {
    std::vector<float> out(x.size());
    for (size_t b = 0; b < x.size() / cuda::kQ8Block; ++b) {
        int8_t q[cuda::kQ8Block];
        const float d = cuda::quantize_q8_block(x.data() + b * cuda::kQ8Block, q);
        for (int i = 0; i < cuda::kQ8Block; ++i)
            out[b * cuda::kQ8Block + size_t(i)] = float(double(q[i]) * d);
    }
    return out;
}

}  // namespace tandem::test

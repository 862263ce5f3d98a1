// Helpers of the GPU tests (CTest label `gpu`): skip where no CUDA device is present, move host
// vectors to and from device memory through a stream, and poison outputs so that an element a
// kernel never wrote shows up as NaN. Plain C++: the tests drive the kernels through their host
// launchers (kernels/cuda/*.h) and compare with the CPU kernels or float64.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "kernels/device.h"
#include "kernels/stream.h"
#include "kernels/tensor.h"

namespace tandem::test {

inline const Device kGpu{DeviceKind::Cuda, 0};

// In a TEST body: skips (with the reason) where this binary sees no CUDA device.
#define TANDEM_REQUIRE_GPU()                                                              \
    do {                                                                                  \
        if (!::tandem::cuda_compiled()) GTEST_SKIP() << "built without the CUDA backend"; \
        if (::tandem::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device here";    \
    } while (0)

// A device tensor holding a copy of `bytes` host bytes; the copy is complete on return.
OwnedTensor upload_bytes(const void* host, size_t bytes, DType dtype, Shape shape, Stream& stream);

template <class T>
OwnedTensor upload(const std::vector<T>& host, DType dtype, Shape shape, Stream& stream) {
    return upload_bytes(host.data(), host.size() * sizeof(T), dtype, shape, stream);
}

// A device tensor whose every byte is 0xFF: NaN as f32, f16 and bf16, so an unwritten output
// element fails any comparison.
OwnedTensor poisoned(DType dtype, Shape shape, Stream& stream);

// The tensor's bytes, copied back after the stream's queued work.
std::vector<uint8_t> download_bytes(const Tensor& device, Stream& stream);

template <class T>
std::vector<T> download(const Tensor& device, Stream& stream) {
    const std::vector<uint8_t> bytes = download_bytes(device, stream);
    std::vector<T> out(bytes.size() / sizeof(T));
    std::memcpy(out.data(), bytes.data(), out.size() * sizeof(T));
    return out;
}

// max |a - b| / max(max |b|, floor): the normalised error the GPU tests bound. NaN in either
// vector gives infinity, so unwritten (poisoned) outputs fail.
double max_rel_error(const std::vector<float>& a, const std::vector<double>& b,
                     double floor = 1e-6);
double max_rel_error(const std::vector<float>& a, const std::vector<float>& b, double floor = 1e-6);

// The worst normalised error of a against b (as max_rel_error) and where it is, for messages
// that say which element failed: "worst 3.2e-3 at 4105 (token 1, row 6): got .., want ..".
struct WorstError {
    double error = 0;  // infinity where a holds NaN (an unwritten, poisoned element)
    size_t index = 0;
    double got = 0, want = 0;
    std::string str(int64_t row_length) const;  // index split into (row, column)
};
WorstError worst_error(const std::vector<float>& a, const std::vector<double>& b,
                       double floor = 1e-6);

// Random weights [rows, k] of `type` as the GPU reads them (bytes: GGUF blocks, or f32/f16/bf16
// elements) and the float values those bytes stand for (cpu::dequantize_row, exact widening).
struct HostWeights {
    std::vector<uint8_t> bytes;
    std::vector<float> values;  // [rows, k]
};
HostWeights random_weights(DType type, int64_t rows, int64_t k, std::mt19937_64& rng,
                           float std = 1.0f);

// x (whole blocks of 32) as the quantized GEMV dots it: each 32-block rounded to int8 times its
// f32 scale, exactly the GPU's values (cuda::quantize_q8_block, the quantize kernel's twin).
std::vector<float> q8_rounded(const std::vector<float>& x);

}  // namespace tandem::test

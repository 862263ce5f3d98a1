#include "bench/machine.h"

#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <functional>
#include <vector>

#include "kernels/buffer.h"
#include "kernels/cpu/cpu_isa.h"
#include "kernels/stream.h"

namespace tandem::bench {

namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

double median_of(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

// Four independent accumulators of 8 floats: enough loads in flight to saturate memory, not
// the add latency.
__attribute__((target("avx2"))) float sum_stream_avx2(const float* a, int64_t n) {
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(),
                     _mm256_setzero_ps()};
    int64_t i = 0;
    for (; i + 32 <= n; i += 32)
        for (int j = 0; j < 4; ++j)
            acc[j] = _mm256_add_ps(acc[j], _mm256_loadu_ps(a + i + 8 * j));
    alignas(32) float lanes[8];
    _mm256_store_ps(lanes,
                    _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3])));
    float sum = 0;
    for (float v : lanes)
        sum += v;
    for (; i < n; ++i)
        sum += a[i];
    return sum;
}

// Baseline x86-64 (SSE2) for CPUs without AVX2: the compiler vectorises the strided sums.
float sum_stream_scalar(const float* a, int64_t n) {
    float acc[8] = {};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; ++j)
            acc[j] += a[i + j];
    float sum = 0;
    for (float v : acc)
        sum += v;
    for (; i < n; ++i)
        sum += a[i];
    return sum;
}

// Independent FMA chains, 10 accumulators per thread, 16 or 8 floats wide.
typedef float Vec16 __attribute__((vector_size(64)));
typedef float Vec8 __attribute__((vector_size(32)));

template <class Vec, int kWidth>
[[gnu::always_inline]] inline float fma_chains(int64_t iterations) {
    Vec acc[10], mul, add;
    for (int i = 0; i < kWidth; ++i) {
        mul[i] = 0.999999f;
        add[i] = 1e-7f;
    }
    for (auto& v : acc)
        v = mul;
    for (int64_t it = 0; it < iterations; ++it)
        for (auto& v : acc)
            v = v * mul + add;
    float sum = 0;
    for (auto& v : acc)
        for (int i = 0; i < kWidth; ++i)
            sum += v[i];
    return sum;
}
__attribute__((target("avx512f,fma"))) float fma_chains_512(int64_t n) {
    return fma_chains<Vec16, 16>(n);
}
__attribute__((target("avx2,fma"))) float fma_chains_256(int64_t n) {
    return fma_chains<Vec8, 8>(n);
}

}  // namespace

double measure_read_bandwidth_gbps(ThreadPool& pool, int64_t bytes) {
    const int64_t n = bytes / 4;
    std::vector<float> a(static_cast<size_t>(n), 1.0f);
    const bool avx2 = cpu::detected_isa() >= cpu::CpuIsa::Avx2;
    std::vector<double> rates;
    for (int rep = 0; rep < 5; ++rep) {
        std::atomic<double> total{0};
        const auto start = std::chrono::steady_clock::now();
        pool.parallel_for(n, 1 << 18, [&](int64_t begin, int64_t end) {
            const float* p = a.data() + begin;
            total = total +
                    (avx2 ? sum_stream_avx2(p, end - begin) : sum_stream_scalar(p, end - begin));
        });
        rates.push_back(double(n) * 4 / seconds_since(start) / 1e9);
    }
    return median_of(rates);
}

double measure_device_copy_gbps(Device device, int64_t bytes) {
    const Buffer from = allocate(device, size_t(bytes)), to = allocate(device, size_t(bytes));
    const std::unique_ptr<Stream> stream = make_stream(device);
    stream->copy_async(to.data(), from.data(), size_t(bytes), CopyDirection::DeviceToDevice);
    stream->synchronize();  // warm-up
    std::vector<double> rates;
    for (int rep = 0; rep < 7; ++rep) {
        const auto start = std::chrono::steady_clock::now();
        stream->copy_async(to.data(), from.data(), size_t(bytes), CopyDirection::DeviceToDevice);
        stream->synchronize();
        rates.push_back(2.0 * double(bytes) / seconds_since(start) / 1e9);
    }
    return median_of(rates);
}

double measure_triad_gbps(ThreadPool& pool, int64_t bytes) {
    const int64_t n = bytes / 12;
    std::vector<float> a(static_cast<size_t>(n)), b(static_cast<size_t>(n), 1.0f),
        c(static_cast<size_t>(n), 2.0f);
    std::vector<double> rates;
    for (int rep = 0; rep < 5; ++rep) {
        const auto start = std::chrono::steady_clock::now();
        pool.parallel_for(n, 1 << 16, [&](int64_t begin, int64_t end) {
            for (int64_t i = begin; i < end; ++i)
                a[size_t(i)] = b[size_t(i)] + 3.0f * c[size_t(i)];
        });
        rates.push_back(double(n) * 12 / seconds_since(start) / 1e9);  // STREAM: 3 streams
    }
    return median_of(rates);
}

double measure_peak_gflops(ThreadPool& pool) {
    const bool wide = cpu::detected_isa() == cpu::CpuIsa::Avx512;
    const int width = wide ? 16 : 8;
    const int64_t iterations = 20'000'000;
    std::vector<double> rates;
    for (int rep = 0; rep < 3; ++rep) {
        std::atomic<float> sink{0};
        const auto start = std::chrono::steady_clock::now();
        pool.run(pool.size(), [&](int64_t) {
            sink = sink + (wide ? fma_chains_512(iterations) : fma_chains_256(iterations));
        });
        rates.push_back(double(iterations) * 10 * width * 2 * pool.size() / seconds_since(start) /
                        1e9);
    }
    return median_of(rates);
}

}  // namespace tandem::bench

// tandem-kernel-bench: the machine's memory bandwidth (a STREAM-like triad over buffers far
// larger than the caches) next to the CPU linear kernel at decode shapes (one token), so each
// kernel's GB/s reads as a fraction of what the machine can do.
//
//   build/bench/tandem-kernel-bench --benchmark_repetitions=5
//   --benchmark_report_aggregates_only=true
#include <benchmark/benchmark.h>

#include <vector>

#include "kernels/cpu/linear.h"
#include "kernels/tensor.h"
#include "kernels/thread_pool.h"

namespace {

tandem::ThreadPool& pool() {
    static tandem::ThreadPool instance;
    return instance;
}

// a[i] = b[i] + s * c[i] over 3 x 128 MiB; counts the 3 streams (2 reads, 1 write).
void BM_triad_bandwidth(benchmark::State& state) {
    const int64_t n = int64_t(32) << 20;
    std::vector<float> a(static_cast<size_t>(n)), b(size_t(n), 1.0f), c(size_t(n), 2.0f);
    for (auto _ : state) {
        pool().parallel_for(n, 1 << 16, [&](int64_t begin, int64_t end) {
            for (int64_t i = begin; i < end; ++i)
                a[size_t(i)] = b[size_t(i)] + 3.0f * c[size_t(i)];
        });
        benchmark::DoNotOptimize(a.data());
        benchmark::ClobberMemory();
    }
    state.SetBytesProcessed(int64_t(state.iterations()) * n * 3 * int64_t(sizeof(float)));
}
BENCHMARK(BM_triad_bandwidth)->Unit(benchmark::kMillisecond)->UseRealTime();

// y[1, m] = x[1, k] · w[m, k]ᵀ with w in `dtype`; bytes processed = the weight bytes.
void BM_linear_decode(benchmark::State& state, tandem::DType dtype) {
    const int64_t m = state.range(0), k = state.range(1);
    tandem::OwnedTensor w = tandem::make_tensor(dtype, {m, k});
    std::fill_n(static_cast<std::byte*>(w.view.data()), w.view.bytes(), std::byte{0x3c});
    tandem::OwnedTensor x = tandem::make_tensor(tandem::DType::F32, {1, k});
    tandem::OwnedTensor y = tandem::make_tensor(tandem::DType::F32, {1, m});
    std::fill_n(x.view.data_as<float>(), k, 0.5f);
    for (auto _ : state) {
        tandem::cpu::linear(x.view, w.view, tandem::Tensor(), y.view, pool());
        benchmark::DoNotOptimize(y.view.data());
    }
    state.SetBytesProcessed(int64_t(state.iterations()) * w.view.bytes());
}
BENCHMARK_CAPTURE(BM_linear_decode, bf16, tandem::DType::BF16)
    ->Args({14336, 4096})
    ->Args({768, 2048})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();
BENCHMARK_CAPTURE(BM_linear_decode, f32, tandem::DType::F32)
    ->Args({14336, 4096})
    ->Args({768, 2048})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();

}  // namespace

BENCHMARK_MAIN();

// The machine's own ceilings, measured in the same process as the benchmark that reports against
// them: memory bandwidth (what decode is bound by) and peak f32 FMA rate (what prefill is bound
// by). Shared by tandem-kernel-bench and tandem-bench, so both state the same bound.
//
// The figures are medians of a few passes over buffers far larger than the last-level cache, on
// every thread of `pool`; a loaded machine measures lower, which is why every result carries the
// figure measured next to it rather than a constant.
#pragma once

#include <cstdint>

#include "kernels/device.h"
#include "kernels/thread_pool.h"

namespace tandem::bench {

// Read-only stream (a sum) over `bytes` of floats. Weights are only read during decode, so this,
// not a triad, is the ceiling decode can reach.
double measure_read_bandwidth_gbps(ThreadPool& pool, int64_t bytes = int64_t(1) << 30);

// STREAM triad a = b + 3c over three arrays of `bytes` / 3, counted as STREAM counts (three
// streams), for comparison with published STREAM figures.
double measure_triad_gbps(ThreadPool& pool, int64_t bytes = int64_t(768) << 20);

// Device-to-device copy bandwidth of a GPU (cuda:N), counted as bytes read plus bytes written:
// the ceiling a model on that device is measured against. Medians of a few copies of `bytes`.
double measure_device_copy_gbps(Device device, int64_t bytes = int64_t(1) << 30);

// Independent FMA chains on every thread, 512-bit where the CPU has AVX-512, else 256-bit.
double measure_peak_gflops(ThreadPool& pool);

}  // namespace tandem::bench

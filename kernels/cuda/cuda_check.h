// Checked CUDA calls for the .cu files: every runtime call and every launch goes through
// TANDEM_CUDA_CHECK, which throws tandem::Error naming the statement, the file and the line, so a
// failure on the GPU machine says where it happened without a debugger.
//
//   TANDEM_CUDA_CHECK(cudaMemsetAsync(p, 0, n, stream));
//   my_kernel<<<grid, block, 0, stream>>>(...);
//   TANDEM_CUDA_CHECK_LAUNCH("my_kernel");
#pragma once
#include <cuda_runtime.h>

#include "kernels/error.h"
#include "kernels/stream.h"

#define TANDEM_CUDA_CHECK(statement) \
    ::tandem::cuda::check_status((statement), #statement, __FILE__, __LINE__)
#define TANDEM_CUDA_CHECK_LAUNCH(kernel_name) \
    ::tandem::cuda::check_status(cudaGetLastError(), "launch of " kernel_name, __FILE__, __LINE__)

namespace tandem::cuda {

inline void check_status(cudaError_t status, const char* statement, const char* file, int line) {
    if (status != cudaSuccess)
        fail(statement, " failed at ", file, ":", line, ": ", cudaGetErrorName(status), " (",
             cudaGetErrorString(status), ")");
}

// The CUDA stream behind `stream`, which must be a stream of a cuda:N device.
inline cudaStream_t native_stream(Stream& stream) {
    if (stream.device().kind != DeviceKind::Cuda)
        fail("a CUDA kernel was given a stream of ", stream.device().name());
    return static_cast<cudaStream_t>(stream.native_handle());
}

// Blocks for a 1-D launch of n threads' worth of work in blocks of `threads`.
inline unsigned blocks_for(int64_t n, int threads) {
    return unsigned((n + threads - 1) / threads);
}

}  // namespace tandem::cuda

// Counts the CUDA devices this process can use. Built only with the CUDA backend; the CPU-only
// build links device_query_stub.cpp instead.
#include <cuda_runtime.h>

#include <string>

namespace tandem {

int cuda_query_device_count(std::string* why_none) {
    int count = 0;
    const cudaError_t status = cudaGetDeviceCount(&count);
    if (status != cudaSuccess) {
        *why_none = cudaGetErrorString(status);
        return 0;
    }
    if (count == 0) *why_none = "the driver reports no devices";
    return count;
}

}  // namespace tandem

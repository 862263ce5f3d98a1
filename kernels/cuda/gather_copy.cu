#include "kernels/cuda/gather_copy.h"

#include <cuda_runtime.h>

#include "kernels/cuda/cuda_check.h"
#include "kernels/error.h"

namespace tandem::cuda {
namespace {

constexpr int kThreads = 256;
constexpr unsigned kBlocksPerCopy = 16;  // enough loads in flight to keep PCIe busy

// blockIdx.y: the copy; the blocks of x stride over its bytes, 16 at a time where the source,
// the destination and the length allow (expert tensors in a slot are 256-byte aligned; a mapped
// checkpoint's tensors usually are too), else byte by byte.
__global__ void __launch_bounds__(kThreads)
    gather_copies_kernel(const ExpertCopy* list, const int32_t* count) {
    if (int32_t(blockIdx.y) >= *count) return;
    const ExpertCopy c = list[blockIdx.y];
    const uint64_t stride = uint64_t(gridDim.x) * kThreads;
    const uint64_t first = uint64_t(blockIdx.x) * kThreads + threadIdx.x;
    const bool wide =
        ((reinterpret_cast<uintptr_t>(c.src) | reinterpret_cast<uintptr_t>(c.dst) | c.bytes) &
         15) == 0;
    if (wide) {
        const auto* src = static_cast<const uint4*>(c.src);
        auto* dst = static_cast<uint4*>(c.dst);
        for (uint64_t i = first; i < c.bytes / 16; i += stride)
            dst[i] = src[i];
    } else {
        const auto* src = static_cast<const uint8_t*>(c.src);
        auto* dst = static_cast<uint8_t*>(c.dst);
        for (uint64_t i = first; i < c.bytes; i += stride)
            dst[i] = src[i];
    }
}

}  // namespace

void gather_copies(void* stream, const ExpertCopy* list, const int32_t* count, int64_t max_copies) {
    if (max_copies <= 0) return;
    if (max_copies > 65535) fail("cuda::gather_copies: ", max_copies, " copies exceed a grid");
    gather_copies_kernel<<<dim3(kBlocksPerCopy, unsigned(max_copies)), kThreads, 0,
                           static_cast<cudaStream_t>(stream)>>>(list, count);
    TANDEM_CUDA_CHECK_LAUNCH("gather_copies_kernel");
}

}  // namespace tandem::cuda

// cuda::gather_copies: the expert copies of a captured hybrid decode step
// (kernels/expert_tables.h), as one kernel that reads its list from device memory when it runs, so
// that a CUDA graph can hold copies whose sources, destinations and count the host decides while
// the graph runs. The sources are page-locked host memory mapped into the device's address space
// (read over PCIe by the SMs: zero-copy); a cudaMemcpyAsync node, by contrast, has its addresses
// fixed at capture. Plain C++ header: only CUDA builds define it.
#pragma once

#include <cstdint>

#include "kernels/expert_tables.h"

namespace tandem::cuda {

// Copies list[0 .. *count) on `stream` (a cudaStream_t): count and list are device memory, read
// by the kernel; *count must be <= max_copies, the grid's size (copies past it are not made, and
// the kernel sets nothing to say so: the host checks the count when it writes the list).
void gather_copies(void* stream, const ExpertCopy* list, const int32_t* count, int64_t max_copies);

}  // namespace tandem::cuda

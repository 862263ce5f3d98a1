// The sim device's memory, which the host cannot touch, as on a GPU.
//
// allocate(sim) hands out an address range reserved with PROT_NONE: any read or write of it by
// host code dies with SIGSEGV, as dereferencing a cudaMalloc pointer does. Each range is backed
// by host memory that only the sim device reaches: the sim streams' copies and memsets translate
// device addresses to it, and the sim device's kernels (work a sim stream runs: launch_host) ask
// for it with sim_kernel_address(). So code that passes on sim passes on cuda:N as far as where
// memory lives is concerned: every host read or write of device memory is a stream copy.
//
// Non-goals: no bounds checks inside a kernel (a kernel may read past what it asked for, as a
// CUDA kernel may), no unified memory.
#pragma once

#include <cstddef>

namespace tandem {

// Reserves `bytes` (> 0) of sim device memory; page-aligned. Throws tandem::Error when out of
// memory or address space.
void* sim_malloc(size_t bytes);
void sim_free(void* data) noexcept;

// Whether [p, p + bytes) lies in one live sim allocation.
bool is_sim_address(const void* p, size_t bytes);

// The host address behind sim device memory [p, p + bytes), for the sim device's own kernels:
// only work running on a sim stream's worker may call it; anywhere else it throws, as a GPU
// pointer is not host memory. Throws when the range is not in one sim allocation.
void* sim_kernel_address(const void* p, size_t bytes);

// For the sim streams only (kernels/sim_stream.cpp): the same translation without the thread
// check, done when a copy is queued; and the mark of a stream's worker thread.
void* sim_backing_address(const void* p, size_t bytes);
void sim_mark_worker_thread();

}  // namespace tandem

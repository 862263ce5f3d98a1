// The CUDA backend as a plugin. In a CUDA build the CUDA code (kernels/cuda/*.cu and the device
// decoder of models/) is not linked into the core: it is libtandem_cuda.so (CMake target
// tandem::cuda, models/CMakeLists.txt), which the core loads with dlopen the first time something
// asks for a cuda:N device. A CPU-only run therefore needs neither the plugin nor the CUDA runtime
// it links (libcudart, libcublas), and the core has no DT_NEEDED on them.
//
// The plugin holds its own copy of the core code it uses (the static libraries, every symbol
// local but two), so the two sides share types, not state: both must come from one build (the
// table carries the ABI number and the version, checked at load), and the process-wide kernel
// settings (log level, ISA, tile policy, batch invariance) are copied into the plugin before each
// call that runs code there. Objects cross freely: each side calls the other's through virtual
// functions (Model, Stream) and frees device memory through the functions below.
//
// The core finds the plugin through the RUNPATH of the binary holding the core (libtandem.so:
// its own directory; the tools: ../lib; in the build tree: build/lib), then the usual search
// (LD_LIBRARY_PATH, ld.so.cache). It is never unloaded.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "kernels/cpu/cpu_isa.h"
#include "kernels/cpu/tile_gemm.h"
#include "kernels/device.h"
#include "kernels/log.h"

namespace tandem {

class Stream;

// The functions of the CUDA backend that the core calls (kernels/buffer.cpp, device.cpp,
// sim_stream.cpp). Defined three times, one of which is linked into any binary: by the CUDA
// objects (kernels/cuda/device_query.cu, stream_cuda.cu) in the plugin and in the GPU tests,
// which link those objects directly; by the loader (cuda_backend.cpp) in the core of a CUDA
// build; by the stubs (kernels/cuda/*_stub.cpp) in a CPU-only build.
int cuda_query_device_count(std::string* why_none);
void* cuda_malloc(Device device, size_t bytes);
void cuda_free(void* data) noexcept;
std::unique_ptr<Stream> make_cuda_stream(Device device);
// Page-locked host memory (cudaMallocHost): copies from and to it run at full PCIe speed and
// asynchronously to the host.
void* cuda_host_alloc(size_t bytes);
void cuda_host_free(void* data) noexcept;
// Page-locks existing host memory [data, data + bytes) for the same (cudaHostRegister, read-only
// so that a read-only mapping of a checkpoint qualifies), mapped into the devices' address space
// so that kernels can read it (a captured decode step's gather copies, kernels/expert_tables.h).
// Returns the device address of `data`; null, with the reason in *why, when the driver refuses.
// (Page-locked memory from cuda_host_alloc is mapped at its host address: unified addressing.)
void* cuda_host_register(void* data, size_t bytes, std::string* why);
void cuda_host_unregister(void* data) noexcept;

// Raised whenever the table below changes.
inline constexpr int kCudaBackendAbi = 4;  // 4: registered host memory mapped for kernels

// The process-wide settings of the CPU kernels, copied from the core into the plugin's copy.
struct CudaBackendSettings {
    LogLevel log_level = LogLevel::Warn;
    cpu::CpuIsa isa = cpu::CpuIsa::Scalar;
    cpu::TileGemmPolicy tile_gemm = cpu::TileGemmPolicy::Auto;
    bool batch_invariant = false;
};

inline CudaBackendSettings current_cuda_backend_settings() {
    return {.log_level = log_level(),
            .isa = cpu::active_isa(),
            .tile_gemm = cpu::tile_gemm_policy(),
            .batch_invariant = cpu::batch_invariant_kernels()};
}

inline void apply_cuda_backend_settings(const CudaBackendSettings& settings) {
    set_log_level(settings.log_level);
    cpu::force_isa(settings.isa);
    cpu::set_tile_gemm_policy(settings.tile_gemm);
    cpu::set_batch_invariant_kernels(settings.batch_invariant);
}

// What the plugin's entry point, tandem_cuda_backend(), returns.
struct CudaBackend {
    int abi = kCudaBackendAbi;
    const char* version = nullptr;  // build::kVersion of the plugin's build
    void (*apply_settings)(const CudaBackendSettings& settings) = nullptr;
    int (*query_device_count)(std::string* why_none) = nullptr;
    void* (*malloc)(Device device, size_t bytes) = nullptr;
    void (*free)(void* data) noexcept = nullptr;
    std::unique_ptr<Stream> (*make_stream)(Device device) = nullptr;
    void* (*host_alloc)(size_t bytes) = nullptr;
    void (*host_free)(void* data) noexcept = nullptr;
    void* (*host_register)(void* data, size_t bytes, std::string* why) = nullptr;
    void (*host_unregister)(void* data) noexcept = nullptr;
};

// The loaded plugin, its settings brought up to date. Throws tandem::Error naming the plugin's
// file and why it could not be loaded (dlerror's words: the plugin missing, or a library it needs,
// such as libcudart, missing; or a plugin of another build). Only in the core of a CUDA build.
const CudaBackend& cuda_backend();

// A symbol the plugin exports besides tandem_cuda_backend (the device decoder's factory, for
// models/; the device experts', for engine/), or a tandem::Error as cuda_backend() throws. A
// CPU-only build's stub always throws.
void* cuda_backend_symbol(const char* name);

}  // namespace tandem

// The plugin's entry point (models/cuda_plugin.cpp).
extern "C" const tandem::CudaBackend* tandem_cuda_backend();

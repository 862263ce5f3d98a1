// Where memory lives and work runs: the host CPU, a CUDA GPU, or `sim`, an emulated accelerator
// used to test stream orchestration on machines without a GPU.
//
// A Device is a small value (kind + index). Memory on a device is obtained only through
// allocate(), which returns an owning Buffer. C++17, like kernels/stream.h.
#pragma once

#include <cstddef>
#include <string>

namespace tandem {

class Buffer;

enum class DeviceKind : uint8_t { Cpu, Cuda, Sim };

struct Device {
    DeviceKind kind = DeviceKind::Cpu;
    int index = 0;

    static Device cpu() { return {}; }
    bool is_cpu() const { return kind == DeviceKind::Cpu; }
    std::string name() const;  // "cpu", "cuda:0", "sim:0"
    // Spelled out rather than defaulted: CUDA sources include this header as C++17.
    friend bool operator==(const Device& a, const Device& b) {
        return a.kind == b.kind && a.index == b.index;
    }
    friend bool operator!=(const Device& a, const Device& b) { return !(a == b); }
};

// Parses "cpu", "cuda", "cuda:N", "sim", "sim:N"; throws tandem::Error naming the string.
Device parse_device(const std::string& text);

// Allocates `bytes` on `device`, aligned to 64 bytes (a cache line, and enough for AVX-512).
// Memory of cuda:N and of sim is not host memory: the host reaches it only by stream copies
// (kernels/stream.h, kernels/sim_device.h).
// Throws tandem::Error when the device is not available in this build or memory runs out.
Buffer allocate(Device device, size_t bytes);

// Whether this binary was built with the CUDA backend, and how many CUDA devices it sees
// (0 when not compiled in or no driver/GPU; the reason is logged once).
bool cuda_compiled();
int cuda_device_count();

}  // namespace tandem

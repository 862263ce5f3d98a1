// DeviceExperts: what computes the hybrid executor's device-side experts of one MoE layer, on a
// stream of the expert device, from the experts' device slots into a device output buffer.
//
// One call is one launch over a set of experts (a layer's experts whose copies have landed, or
// one expert that waited for its own copy); the executor makes as few calls as the copies allow.
// The arguments are cpu::moe_experts' (kernels/cpu/expert_ffn.h) with the device's side in
// device memory, and map one to one onto cuda::MoeExpertsArgs (kernels/cuda/moe_experts.h):
// x, out and the experts' tensors are device memory; offsets, token_index, token_weight and skip
// are host arrays read before run() returns (the CUDA kernel uploads its tables from them; sim
// copies them), so the caller may reuse them at once. The device tensors must stay valid until
// the stream has run the work.
//
// Implementations: `sim` (make_device_experts(sim)) runs the fused CPU kernel on one thread of
// its own, as launch_host work on the stream, reading device memory through sim_kernel_address;
// `cuda:N` is cuda::moe_experts on the stream (device_experts_cuda.cpp, in the CUDA plugin:
// make_device_experts loads it).
#pragma once

#include <cstdint>
#include <memory>
#include <span>

#include "kernels/cpu/expert_ffn.h"
#include "kernels/stream.h"
#include "kernels/tensor.h"

namespace tandem {

struct DeviceExpertsCall {
    Tensor x;                                     // [n_tokens, hidden_dim] f32, device
    Tensor out;                                   // [n_tokens, hidden_dim] f32, device, += into
    std::span<const cpu::ExpertWeights> experts;  // [n_experts] device tensors; an expert that
                                                  // is skipped or has no tokens may be empty
    std::span<const int32_t> offsets;             // host [n_experts + 1]: expert e's slots are
                                                  // [offsets[e], offsets[e + 1])
    std::span<const int32_t> token_index;         // host [n_slots]: the token of each slot
    std::span<const float> token_weight;          // host [n_slots]: its routing weight
    std::span<const uint8_t> skip;                // host, empty or [n_experts]: 1 = not here
    // gpt-oss: the clamped activation, and each expert's biases in the host tensors of its
    // ExpertWeights (the sim device reads them there; cuda:N uploads them with the call).
    cpu::GluOptions glu = {};
};

class DeviceExperts {
  public:
    virtual ~DeviceExperts() = default;
    virtual Device device() const = 0;
    // Queues the experts of `call` on `stream` (a stream of device()): for each expert not
    // skipped, down(silu(gate(x)) * up(x)) of its tokens, times their weights, added into their
    // rows of out. Errors in the arguments throw here; errors while running come back at the
    // stream's synchronize().
    virtual void run(Stream& stream, const DeviceExpertsCall& call) = 0;
};

// The implementation for `device`; throws tandem::Error for a device without one.
std::unique_ptr<DeviceExperts> make_device_experts(Device device);

}  // namespace tandem

namespace tandem {
// The cuda:N implementation: in the core of a CUDA build, loaded from the CUDA plugin
// (device_experts_loader.cpp); in the plugin and the GPU tests, built directly
// (device_experts_cuda.cpp); in a CPU-only build, an error (device_experts_stub.cpp).
std::unique_ptr<DeviceExperts> cuda_make_device_experts(Device device);
}  // namespace tandem

// The CUDA plugin's factory (engine/src/device_experts_cuda.cpp), exported unmangled for dlsym.
extern "C" std::unique_ptr<tandem::DeviceExperts> tandem_cuda_make_device_experts(
    tandem::Device device);

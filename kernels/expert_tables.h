// The tables through which a captured (CUDA graph) decode step learns, per MoE layer, which routed
// experts the device computes and which expert weights it copies: the host writes them into
// page-locked memory while the step runs (models/expert_runner.h, GraphLayerIo), the step copies
// them to the device, and the kernels read them there (cuda::moe_experts_routed through a
// writable DeviceExpertTable, cuda::gather_copies). So the graph is the same every step while
// the experts it runs and moves change.
//
// Plain C++17: the CUDA sources include it.
#pragma once

#include <cstdint>

namespace tandem {

// One expert as the device computes it: its weights' device addresses (the layout of a device
// slot, engine/src/expert_slot.h). A null gate means the expert is not on the device this step:
// its tokens' slots contribute nothing there (the CPU computes them).
struct ExpertTableEntry {
    const void* gate = nullptr;  // [ffn_dim, hidden_dim]
    const void* up = nullptr;    // [ffn_dim, hidden_dim]
    const void* down = nullptr;  // [hidden_dim, ffn_dim]
};

// One contiguous copy into device memory: `src` is host memory the device can read (page-locked
// and mapped, at its device address), `dst` device memory. An expert is three of them (gate, up,
// down).
struct ExpertCopy {
    const void* src = nullptr;
    void* dst = nullptr;
    uint64_t bytes = 0;
};

}  // namespace tandem

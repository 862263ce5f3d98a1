// Routed SwiGLU experts of one MoE layer on a CUDA device, the semantics of cpu::moe_experts
// (kernels/cpu/expert_ffn.h): for each expert e not skipped, down(silu(gate(x)) * up(x)) of its
// tokens, scaled by the routing weight and added into those tokens' rows of `out`; with
// gpt-oss's biases and clamped activation (GluOptions) where the call has them.
//
// Experts with at most kGemvMaxTokens tokens (decode) run in two launches for the whole layer:
// gate+up of every such expert (grid: experts x blocks of ffn rows, SiLU(gate)*up fused), then
// down (experts x blocks of hidden rows), through a device table of weight pointers; the GEMV
// inner loop of linear.cu. Experts with more tokens (prefill) gather their rows and take
// cuda::linear's cuBLAS path. Every slot's down row is kept apart, then one kernel adds each
// token's slots into `out` in slot order: no atomics, so runs repeat bit for bit.
//
// Limits: the gate/up weights of all experts computed here share one type, and the down weights
// one type (a layer's experts are quantized alike); anything else is an error.
#pragma once
#include <cstdint>
#include <span>

#include "kernels/cpu/expert_ffn.h"
#include "kernels/cuda/context.h"
#include "kernels/expert_tables.h"
#include "kernels/tensor.h"

namespace tandem::cuda {

struct MoeExpertsArgs {
    Tensor x;                                     // [n_tokens, hidden_dim] f32, device
    Tensor out;                                   // [n_tokens, hidden_dim] f32, device, += into
    std::span<const cpu::ExpertWeights> experts;  // [n_experts] device tensors (an expert
                                                  // that is skipped or has no tokens may be empty)
    std::span<const int32_t> offsets;             // host [n_experts + 1]: expert e's slots are
                                                  // [offsets[e], offsets[e + 1])
    std::span<const int32_t> token_index;         // host [n_slots]: the token of each slot
    std::span<const float> token_weight;          // host [n_slots]: its routing weight
    std::span<const uint8_t> skip;                // host, empty or [n_experts]: 1 = elsewhere
    // The gated activation (limit 0: SwiGLU). Experts' biases (gate_bias, up_bias, down_bias of
    // their ExpertWeights, f32) are host memory: the call uploads those of the experts it
    // computes with its tables (a few KiB each), so a reload can never leave stale copies.
    cpu::GluOptions glu = {};
};

void moe_experts(Context& ctx, const MoeExpertsArgs& args);

// One MoE layer's experts as a device table of weight pointers, built once at load, so that
// moe_experts_routed needs nothing from the host per call. Every expert must be resident
// (device tensors), gate/up of one type and down of one type, hidden_dim and ffn_dim multiples
// of 8 and float weights 16-byte aligned (the grouped kernels' loads).
//
// A writable table (the second constructor) has no experts of its own: its entries are device
// memory the caller rewrites between launches (a captured hybrid decode step copies them up from
// the host's plan, kernels/expert_tables.h); an entry with a null gate is an expert that is not
// on the device, whose tokens' slots contribute nothing. Its experts must meet the same
// conditions, which the caller checks (writable_table_supported).
class DeviceExpertTable {
  public:
    DeviceExpertTable(Context& ctx, std::span<const cpu::ExpertWeights> experts);
    // entries: device memory of n_experts ExpertTableEntry, 8-byte aligned, not owned.
    DeviceExpertTable(const ExpertTableEntry* entries, int64_t n_experts, int64_t hidden_dim,
                      int64_t ffn_dim, DType gate_type, DType down_type);
    int64_t n_experts() const { return n_experts_; }
    int64_t hidden_dim() const { return hidden_; }
    int64_t ffn_dim() const { return ffn_; }
    DType gate_type() const { return gate_type_; }
    DType down_type() const { return down_type_; }
    const ExpertTableEntry* device_entries() const { return entries_; }  // [n_experts]

  private:
    Buffer owned_;
    const ExpertTableEntry* entries_ = nullptr;
    int64_t n_experts_ = 0, hidden_ = 0, ffn_ = 0;
    DType gate_type_ = DType::F32, down_type_ = DType::F32;
};

// Whether experts shaped and typed like `like` can be computed through a writable table: the
// grouped kernels' conditions (hidden_dim and ffn_dim multiples of 8, gate and up of one type,
// weight types the GEMV reads) and no biases (tables carry weights only; the clamped activation
// is the caller's to rule out, HybridDecodeGraph::supported); slots are 256-byte aligned, so
// alignment holds.
bool writable_table_supported(const cpu::ExpertWeights& like);

// Token-expert slots (n_tokens x k) up to which moe_experts_routed takes a step; each expert
// then has at most n_tokens <= kGemvMaxTokens tokens, the grouped GEMV kernels' case.
inline constexpr int64_t kMaxRoutedSlots = 64;

struct MoeRoutedArgs {
    Tensor x;               // [n_tokens, hidden_dim] f32, device
    Tensor out;             // [n_tokens, hidden_dim] f32, device, += into
    Tensor expert_ids;      // [n_tokens, k] i32, device (cuda::route's ids)
    Tensor expert_weights;  // [n_tokens, k] f32, device
};

// moe_experts() with the routing in device memory: a one-block kernel groups the slots by expert
// on the device (tokens in order within an expert, as group_by_expert does), then the same
// grouped gate+up and down launches run over every expert (those without tokens return at
// once) and each token's slots are summed in slot order. No host synchronisation and no copy
// from the host: a decode step stays on the GPU. n_tokens <= kGemvMaxTokens and
// n_tokens * k <= kMaxRoutedSlots. An id outside [0, n_experts), or of an expert whose entry has
// a null gate, contributes nothing.
void moe_experts_routed(Context& ctx, const DeviceExpertTable& table, const MoeRoutedArgs& args);

}  // namespace tandem::cuda

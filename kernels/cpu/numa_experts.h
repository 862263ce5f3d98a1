// NUMA tensor parallelism for the routed experts (kt-kernel's moe-tp; ../shared/reference/
// cpu-kernels.md section 1.5): each NUMA node owns a slice [begin, end) of the ffn dimension of
// every expert of a layer (gate and up rows, the matching columns of down), copied once into
// memory bound to that node, and computes that slice with the fused kernel cpu::moe_experts on
// its own pool. Each node's down projection is then a partial sum over its slice; the partials
// are added into `out`. Every node thus reads only weights in its own memory, and all nodes'
// memory controllers stream at once.
//
// Slice bounds are multiples of the down weight's block size (256 for the K-quants, 32 for the
// other block types; 32 for float types, to keep SIMD loops free of tails): the intermediate
// activation is quantized in blocks along ffn, so a slice on block bounds quantizes each block
// exactly as the whole row would. Results differ from the single-pool kernel only in the order
// of the float sums of the down projection.
// Experts' biases (gpt-oss) follow: gate and up biases by slice, the down bias on the first node
// with a slice only (the partial sums add it once); the activation is elementwise along ffn, so
// the clamped one slices like SwiGLU.
// Non-goals: splitting the tokens or the experts among nodes (every node reads every expert's
// slice: per-node bandwidth, not capacity, is what decode needs); shared experts and dense FFNs.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "kernels/cpu/expert_ffn.h"
#include "kernels/numa_pools.h"

namespace tandem::cpu {

struct FfnSlice {
    int64_t begin = 0, end = 0;  // [begin, end) of the ffn dimension
    int64_t size() const { return end - begin; }
    bool empty() const { return end <= begin; }
};

// One slice per node, covering [0, ffn_dim) in order, each bound a multiple of `granule`
// except the last end (ffn_dim); sizes in proportion to node_weight (threads per node), in whole
// granules. Nodes get an empty slice when there are fewer granules than nodes.
std::vector<FfnSlice> plan_ffn_slices(int64_t ffn_dim, int64_t granule,
                                      std::span<const int> node_weight);

// The slice granule for these experts: the largest block size of their down weights, at least 32.
int64_t ffn_slice_granule(std::span<const ExpertWeights> experts);

// One MoE layer's experts, sliced per node. Move-only; the views stay valid while it lives.
class NumaExpertSlices {
  public:
    NumaExpertSlices() = default;
    // Copies the slices, each node on its own pool into its own memory. The experts must share
    // ffn_dim, hidden_dim and be contiguous; a mismatch throws naming the expert.
    NumaExpertSlices(std::span<const ExpertWeights> experts, NumaPools& pools);

    int n_nodes() const { return int(slices_.size()); }
    int64_t n_experts() const { return n_experts_; }
    const FfnSlice& slice(int node) const { return slices_[size_t(node)]; }
    // [n_experts]: gate, up [slice, hidden_dim]; down [hidden_dim, slice], in node memory.
    std::span<const ExpertWeights> experts(int node) const { return experts_[size_t(node)]; }
    size_t bytes() const;  // copied, over all nodes

  private:
    int64_t n_experts_ = 0;
    std::vector<FfnSlice> slices_;
    std::vector<NodeMemory> memory_;  // [n_nodes]
    std::vector<std::vector<ExpertWeights>> experts_;
};

// Per-node partial outputs, kept between calls.
struct NumaMoeScratch {
    std::vector<NodeMemory> partials;  // [n_nodes]; node 0 adds straight into `out`
};

// cpu::moe_experts(args) with args.experts computed as `slices` (which must be the slices of
// args.experts): each node runs its slice on its pool, all at once, and the partial outputs are
// added into args.out. args.skip works as in moe_experts.
void moe_experts_numa(const MoeExpertsArgs& args, const NumaExpertSlices& slices, NumaPools& pools,
                      NumaMoeScratch& scratch);

}  // namespace tandem::cpu

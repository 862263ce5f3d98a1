#include "engine/src/cpu_experts.h"

#include "kernels/error.h"
#include "kernels/log.h"

namespace tandem {

void CpuExperts::bind(std::span<const MoeWeights* const> moe_layers) {
    if (numa_ == nullptr) return;
    // The old copies go first, so that a reload needs the copies' memory once, not twice. If a
    // copy fails, nothing is bound; the caller binds the old weights again (Scheduler does).
    layers_.clear();
    layers_.reserve(moe_layers.size());
    try {
        for (const MoeWeights* layer : moe_layers)
            layers_.emplace_back(layer->experts, *numa_);
    } catch (...) {
        layers_.clear();
        throw;
    }
    log_info("NUMA: copied the routed experts' ffn slices to ", numa_->n_nodes(),
             numa_->n_nodes() == 1 ? " node (" : " nodes (",
             double(copied_bytes()) / double(1 << 20), " MiB)");
}

void CpuExperts::run(int moe_layer, const cpu::MoeExpertsArgs& args, ThreadPool& pool) {
    if (numa_ == nullptr) {
        // (Malformed args are moe_experts' to reject; size for what they claim meanwhile.)
        const int64_t n_slots = args.offsets.empty() ? 0 : args.offsets.back();
        if (args.x.rank() == 2)
            arena_.reserve(cpu::moe_experts_scratch_bytes(args.experts, args.x.dim(0), n_slots,
                                                          args.x.dim(1)));
        cpu::moe_experts(args, pool, arena_);
        return;
    }
    if (moe_layer < 0 || moe_layer >= int(layers_.size()))
        fail("CPU experts: MoE layer ", moe_layer, " is not bound (", layers_.size(), " layers)");
    cpu::moe_experts_numa(args, layers_[size_t(moe_layer)], *numa_, scratch_);
}

size_t CpuExperts::copied_bytes() const {
    size_t n = 0;
    for (const cpu::NumaExpertSlices& layer : layers_)
        n += layer.bytes();
    return n;
}

}  // namespace tandem

#include "kernels/cpu/numa_experts.h"

#include <algorithm>
#include <cstring>
#include <numeric>
#include <tuple>

#include "kernels/dtype.h"
#include "kernels/error.h"

namespace tandem::cpu {

namespace {

constexpr int64_t kMinGranule = 32;
constexpr size_t kAlign = 64;  // each copied matrix starts on a cache line
// Below this many floats of partials, the caller adds them up alone: a decode step's few rows
// cost less than waking the nodes' pools.
constexpr int64_t kInlineSumElements = int64_t(1) << 15;

size_t align_up(size_t n) {
    return (n + kAlign - 1) / kAlign * kAlign;
}

// Byte offsets of one expert's slice in its node's memory; its biases' (gpt-oss) where it has
// them.
struct SliceLayout {
    size_t gate = 0, up = 0, down = 0;
    size_t gate_bias = 0, up_bias = 0, down_bias = 0;
};

// A slice of an f32 bias [begin, end), or empty where the expert has none.
Tensor bias_view(std::byte* base, size_t offset, const Tensor& bias, int64_t n) {
    return bias.empty() ? Tensor() : Tensor(base + offset, DType::F32, {n});
}

}  // namespace

std::vector<FfnSlice> plan_ffn_slices(int64_t ffn_dim, int64_t granule,
                                      std::span<const int> node_weight) {
    if (ffn_dim < 0 || granule < 1 || node_weight.empty())
        fail("plan_ffn_slices: ffn_dim ", ffn_dim, ", granule ", granule, ", ", node_weight.size(),
             " nodes");
    int64_t total = 0;
    for (int w : node_weight)
        total += std::max(w, 0);
    const int64_t n_granules = (ffn_dim + granule - 1) / granule;
    std::vector<FfnSlice> slices;
    int64_t before = 0;  // weight of the nodes before this one
    for (int w : node_weight) {
        const int64_t weight = total > 0 ? std::max(w, 0) : 1;
        const int64_t sum = total > 0 ? total : int64_t(node_weight.size());
        const int64_t first = n_granules * before / sum;
        before += weight;
        const int64_t last = n_granules * before / sum;
        slices.push_back({std::min(ffn_dim, first * granule), std::min(ffn_dim, last * granule)});
    }
    return slices;
}

int64_t ffn_slice_granule(std::span<const ExpertWeights> experts) {
    int64_t granule = kMinGranule;
    for (const ExpertWeights& w : experts)
        granule = std::max(granule, dtype_block_size(w.down.dtype()));
    return granule;
}

NumaExpertSlices::NumaExpertSlices(std::span<const ExpertWeights> experts, NumaPools& pools)
    : n_experts_(int64_t(experts.size())) {
    const int n_nodes = pools.n_nodes();
    slices_.assign(size_t(n_nodes), FfnSlice{});
    memory_.resize(size_t(n_nodes));
    experts_.resize(size_t(n_nodes));
    if (experts.empty()) return;
    const int64_t ffn = experts[0].gate.dim(0), hidden = experts[0].gate.dim(1);
    with_context("NUMA expert slices", [&] {
        for (size_t e = 0; e < experts.size(); ++e)
            check_swiglu_expert(experts[e], int64_t(e), hidden, ffn);
    });
    const std::vector<int> weight = pools.threads_per_node();
    slices_ = plan_ffn_slices(ffn, ffn_slice_granule(experts), weight);
    // Gate and up biases are sliced with their rows; the down bias is added once per slot, so
    // one node (the first with a slice) holds it and the others' partial sums have none.
    const int down_bias_node = int(
        std::find_if(slices_.begin(), slices_.end(), [](const FfnSlice& s) { return !s.empty(); }) -
        slices_.begin());

    pools.run_on_nodes([&](int node, ThreadPool& pool) {
        const FfnSlice s = slices_[size_t(node)];
        if (s.empty()) return;
        std::vector<SliceLayout> layout(experts.size());
        size_t total = 0;
        for (size_t e = 0; e < experts.size(); ++e) {
            const ExpertWeights& w = experts[e];
            layout[e].gate = total;
            total = align_up(total + size_t(s.size() * row_bytes(w.gate.dtype(), hidden)));
            layout[e].up = total;
            total = align_up(total + size_t(s.size() * row_bytes(w.up.dtype(), hidden)));
            layout[e].down = total;
            total = align_up(total + size_t(hidden * row_bytes(w.down.dtype(), s.size())));
            layout[e].gate_bias = total;
            total = align_up(total + (w.gate_bias.empty() ? 0 : size_t(s.size()) * 4));
            layout[e].up_bias = total;
            total = align_up(total + (w.up_bias.empty() ? 0 : size_t(s.size()) * 4));
            layout[e].down_bias = total;
            if (node == down_bias_node && !w.down_bias.empty())
                total = align_up(total + size_t(hidden) * 4);
        }
        // Bound to the node before the copy below first touches it.
        memory_[size_t(node)] = pools.allocate(node, total);
        auto* base = static_cast<std::byte*>(memory_[size_t(node)].data());
        std::vector<ExpertWeights>& mine = experts_[size_t(node)];
        for (size_t e = 0; e < experts.size(); ++e) {
            const ExpertWeights& w = experts[e];
            mine.push_back(
                {.gate = Tensor(base + layout[e].gate, w.gate.dtype(), {s.size(), hidden}),
                 .up = Tensor(base + layout[e].up, w.up.dtype(), {s.size(), hidden}),
                 .down = Tensor(base + layout[e].down, w.down.dtype(), {hidden, s.size()}),
                 .gate_bias = bias_view(base, layout[e].gate_bias, w.gate_bias, s.size()),
                 .up_bias = bias_view(base, layout[e].up_bias, w.up_bias, s.size()),
                 .down_bias = node == down_bias_node
                                  ? bias_view(base, layout[e].down_bias, w.down_bias, hidden)
                                  : Tensor()});
        }
        // On the node's own threads, so the copy reads remote memory once and writes locally.
        pool.run(int64_t(experts.size()), [&](int64_t e) {
            const ExpertWeights& src = experts[size_t(e)];
            const ExpertWeights& dst = mine[size_t(e)];
            for (const auto& [from, to] :
                 {std::pair(&src.gate, &dst.gate), std::pair(&src.up, &dst.up)}) {
                const int64_t row = row_bytes(from->dtype(), hidden);
                std::memcpy(to->data(), static_cast<const std::byte*>(from->data()) + s.begin * row,
                            size_t(s.size() * row));
            }
            const DType type = src.down.dtype();
            const int64_t src_row = row_bytes(type, ffn), dst_row = row_bytes(type, s.size());
            const int64_t skip = row_bytes(type, s.begin);
            const auto* from = static_cast<const std::byte*>(src.down.data());
            auto* to = static_cast<std::byte*>(dst.down.data());
            for (int64_t h = 0; h < hidden; ++h)
                std::memcpy(to + h * dst_row, from + h * src_row + skip, size_t(dst_row));
            for (const auto& [from_bias, to_bias, first] :
                 {std::tuple(&src.gate_bias, &dst.gate_bias, s.begin),
                  std::tuple(&src.up_bias, &dst.up_bias, s.begin),
                  std::tuple(&src.down_bias, &dst.down_bias, int64_t(0))})
                if (!to_bias->empty())
                    std::memcpy(to_bias->data(), from_bias->data_as<const float>() + first,
                                size_t(to_bias->bytes()));
        });
    });
}

size_t NumaExpertSlices::bytes() const {
    size_t n = 0;
    for (const NodeMemory& m : memory_)
        n += m.bytes();
    return n;
}

void moe_experts_numa(const MoeExpertsArgs& args, const NumaExpertSlices& slices, NumaPools& pools,
                      NumaMoeScratch& scratch) {
    if (int64_t(args.experts.size()) != slices.n_experts() || slices.n_nodes() != pools.n_nodes())
        fail("moe_experts_numa: slices of ", slices.n_experts(), " experts on ", slices.n_nodes(),
             " nodes for ", args.experts.size(), " experts on ", pools.n_nodes(), " nodes");
    const int64_t n_tokens = args.x.dim(0), hidden = args.x.dim(1);
    if (n_tokens == 0) return;
    const int n_nodes = pools.n_nodes();
    const size_t bytes = size_t(n_tokens * hidden) * sizeof(float);
    scratch.partials.resize(size_t(n_nodes));

    pools.run_on_nodes([&](int node, ThreadPool& pool) {
        if (slices.slice(node).empty()) return;
        MoeExpertsArgs mine = args;
        mine.experts = slices.experts(node);
        if (node > 0) {  // node 0 adds into out itself; the others into partials of their own
            NodeMemory& partial = scratch.partials[size_t(node)];
            if (partial.bytes() < bytes) partial = pools.allocate(node, bytes);
            std::memset(partial.data(), 0, bytes);
            mine.out = Tensor(partial.data(), DType::F32, {n_tokens, hidden});
        }
        moe_experts(mine, pool);
    });

    std::vector<const float*> partials;
    for (int node = 1; node < n_nodes; ++node)
        if (!slices.slice(node).empty())
            partials.push_back(static_cast<const float*>(scratch.partials[size_t(node)].data()));
    if (partials.empty()) return;
    float* out = args.out.data_as<float>();
    const auto add_rows = [&](int64_t begin, int64_t end) {
        for (const float* p : partials)
            for (int64_t i = begin * hidden; i < end * hidden; ++i)
                out[i] += p[i];
    };
    if (n_tokens * hidden * int64_t(partials.size()) <= kInlineSumElements) {
        add_rows(0, n_tokens);
        return;
    }
    pools.run_on_nodes([&](int node, ThreadPool& pool) {
        const int64_t begin = n_tokens * node / n_nodes, end = n_tokens * (node + 1) / n_nodes;
        pool.parallel_for(end - begin, 1,
                          [&](int64_t b, int64_t e) { add_rows(begin + b, begin + e); });
    });
}

}  // namespace tandem::cpu

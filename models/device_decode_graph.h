// The CUDA graphs of the device decoder's decode steps (device_decoder.cpp): a decode step of a
// few sequences is ~30 small kernels per layer, whose launches cost more than they run (measured
// on an H200: ~150 us of fixed cost per OLMoE layer against ~130 us of kernels). A step that
// qualifies (every sequence one new token, at most 8 sequences, routing on the device or a hybrid
// expert runner that can be driven from host functions, no latent attention) is captured once
// per DecodeGraphKey and replayed with one launch.
//
// Everything a replay reads that changes from step to step lives at fixed device addresses in its
// entry's input buffer, rewritten by one host-to-device copy before the launch: the embedded
// tokens (also the residual stream), each sequence's position, the attention's per-layer sequence
// table (cache bases, block tables, positions) and the block tables. The step's activations come
// from the entry's own arena, and its kernels' scratch from a Context used only by graphs, whose
// scratch generation tells when a graph holds freed addresses and must be captured again.
#pragma once

#include <compare>
#include <cstdint>

#include "kernels/buffer.h"
#include "kernels/cuda/attention.h"
#include "kernels/cuda/graph.h"
#include "models/device_hybrid_graph.h"
#include "models/device_step_arena.h"

namespace tandem {

struct DecodeGraphKey {
    int64_t batch = 0;
    int64_t max_keys = 0;  // decode_graph_keys(): the launch shape of the decode attention
    cuda::KvLayout k, v;   // the caches' layout (every sequence of the step shares it)
    auto operator<=>(const DecodeGraphKey&) const = default;
};

// The keys a step with `needed` keys at most is captured for: powers of two from 256, so a
// sequence growing token by token is captured again only at each doubling.
inline int64_t decode_graph_keys(int64_t needed) {
    int64_t keys = 256;
    while (keys < needed)
        keys *= 2;
    return keys;
}

struct DecodeGraphEntry {
    DeviceStepArena arena;  // the step's activations
    size_t arena_bytes = 0;
    Buffer inputs;           // [hidden | positions | tables | block tables], then logits
    size_t input_bytes = 0;  // the part the host rewrites every step
    Tensor hidden;           // [batch, hidden_dim] f32: the embedded tokens, then the residual
    Tensor logits;           // [batch, vocab] f32
    int64_t* positions = nullptr;                                       // [batch]
    cuda::DecodeSequence* tables = nullptr;                             // [n_layers, batch]
    int32_t* block_tables = nullptr;                                    // [batch, max_blocks]
    int64_t max_blocks = 0;                                             // per sequence
    size_t positions_offset = 0, tables_offset = 0, blocks_offset = 0;  // in `inputs`
    cuda::Graph graph;
    uint64_t generation = 0;  // the graph context's scratch generation at capture
    // With a hybrid expert runner: the routed experts' tables and work (device_hybrid_graph.h).
    std::unique_ptr<HybridDecodeGraph> hybrid;
};

}  // namespace tandem

// Routing traces: the two formats of ../shared/traces/, gzip or plain, read in place and
// normalised to one layout. Read by tandem-sim and by the engine's routing replay
// (scheduler/routing_replay.h).
//
//   objects  (olmoe-decode-dev): one JSON object per token, {"seq", "experts": [[k ids] x L],
//            "weights": [[k probabilities] x L], ...}
//            Optional "probs": [[n_experts probabilities] x L], the router's probability of
//            every expert (by expert id, before top-k; --record-routing with
//            --record-probabilities): MRS's top-p scoring then sees the near-misses. Traces
//            without it read as before.
//   pairs    (nvmoe-*): one JSON array per token, [[layer, expert], ...] for every MoE layer and
//            activated expert, layers numbered as in the model; no probabilities.
// Invariants of the result: every token has the same MoE layers and the same top-k; layers are
// renumbered 0..n_layers-1 in model order (layer_ids keeps the model's numbers); expert ids are
// >= 0. Errors name the file and the line.
// Non-goals: hidden states (traces hold none), prefill routings (the traces are decode-only).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace tandem {

struct RoutingTrace {
    std::string source;
    int64_t n_layers = 0;
    int64_t top_k = 0;
    std::vector<int32_t> layer_ids;  // [n_layers] the model's layer numbers
    bool has_weights = false;
    int32_t max_expert = -1;
    std::vector<int32_t> seq;      // [n_tokens] sequence index, 0.. in order of appearance
    std::vector<int32_t> experts;  // [n_tokens, n_layers, top_k]
    std::vector<float> weights;    // [n_tokens, n_layers, top_k], empty without probabilities
    // The router's full distribution (objects format's "probs"); n_probs = 0 without it.
    int64_t n_probs = 0;
    std::vector<float> probs;  // [n_tokens, n_layers, n_probs], by expert id
    // The recorded gate lookahead (recorder's "lookahead"): layer L+d's router applied to layer
    // L's input, d = 1..lookahead_depth; -1 where there is no such layer. Empty without it.
    int64_t lookahead_depth = 0;
    std::vector<int32_t> lookahead;  // [n_tokens, n_layers, lookahead_depth, top_k]

    int64_t n_tokens() const { return int64_t(seq.size()); }
    const int32_t* experts_at(int64_t token, int64_t layer) const {
        return experts.data() + (token * n_layers + layer) * top_k;
    }
    const float* weights_at(int64_t token, int64_t layer) const {
        return weights.data() + (token * n_layers + layer) * top_k;
    }
    bool has_probs() const { return n_probs > 0; }
    const float* probs_at(int64_t token, int64_t layer) const {
        return probs.data() + (token * n_layers + layer) * n_probs;
    }
    // What layer + distance's gate chose from layer's input (distance 1..lookahead_depth).
    const int32_t* lookahead_at(int64_t token, int64_t layer, int64_t distance) const {
        return lookahead.data() +
               ((token * n_layers + layer) * lookahead_depth + distance - 1) * top_k;
    }
};

// Reads a trace file (gzip detected by its magic bytes). `max_tokens` > 0 stops early.
RoutingTrace read_routing_trace(const std::string& path, int64_t max_tokens = 0);
// Parses trace text already in memory (one JSON value per line); `source` names it in errors.
RoutingTrace parse_routing_trace(const std::string& text, const std::string& source,
                                 int64_t max_tokens = 0);

}  // namespace tandem

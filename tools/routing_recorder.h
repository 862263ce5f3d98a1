// RoutingRecorder: writes the experts a model chose, per token and MoE layer, as JSON lines in
// the format of ../shared/traces/README.md (what tandem-sim and the trace tests read):
//   {"seq": "math/0042", "domain": "math", "pos": 5, "token_id": 187,
//    "experts": [[k ids] x layers], "weights": [[k router weights] x layers]}
// one line per decode token (pos counts the generated tokens fed back, from 0), or also per
// prompt token with `prefill` (those lines carry "phase": "prefill" and pos from 0 over the
// prompt). With the gate lookahead, "lookahead": [[[k ids] x J] x layers] holds what layers
// L+1..L+J's routers predicted from layer L's input (-1: no such MoE layer), and "layers" the
// model layer index of each MoE layer is written once per sequence on its first line. With the
// router's full distribution (SamplingParams::routing_probabilities), "probs": [[n_experts
// probabilities by expert id] x layers], four decimals (scheduler/routing_trace.h reads it).
// A path ending in .gz is written gzip-compressed.
#pragma once

#include <memory>
#include <string>

#include <tandem/request.h>

namespace tandem {

class RoutingRecorder {
  public:
    RoutingRecorder(const std::string& path, bool prefill);
    ~RoutingRecorder();
    // Sample `index` of a request run with return_routed_experts.
    void write(const std::string& seq, const std::string& domain, const RequestOutput& output,
               int32_t index);
    int64_t lines() const { return lines_; }

  private:
    struct Sink;
    std::unique_ptr<Sink> sink_;
    bool prefill_;
    int64_t lines_ = 0;
};

}  // namespace tandem

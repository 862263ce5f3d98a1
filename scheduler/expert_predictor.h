// Expert predictors for the prefetcher of tandem-sim and of routing replay. A trace holds no hidden
// states, so the gates of layers L+1..L+3 cannot be applied to layer L's; a predictor stands in for
// them.
//   oracle:ACC  the true experts of the future layer, each replaced by a random other expert with
//               probability 1-ACC. Default ACC = 0.8: cross-layer gate prediction on the residual
//               stream is usually reported at roughly 80-90 % top-k recall for the next layer and
//               lower two or three layers ahead; 0.8 for every distance is a middle value, and the
//               simulator reports history next to it.
//   history     only what the trace has shown so far: co-occurrence counts learned online between
//               layer L's experts and layer L+d's (same token, d = 1..3), plus the previous
//               token's experts at the target layer when that token is the last one observed
//               (temporal locality; in tandem-sim's one-token steps it always is).
//   lookahead   the gate lookahead recorded in the trace (tools/routing_recorder.h): the real
//               routers of layers L+1..L+J applied to layer L's input, as the engine predicts.
// Non-goals: hidden states; per-token load prediction beyond one token per predicted expert.
#pragma once

#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "scheduler/routing_trace.h"

namespace tandem {

class ExpertPredictor {
  public:
    virtual ~ExpertPredictor() = default;
    // The predicted experts (top_k distinct ids) of `target` layer for token `token`, made at
    // `from` layer (< target) once the token's layers 0..from are known. Tokens are trace token
    // indices; a predictor must never be asked about a token it has observed (history would
    // predict it from itself).
    virtual void predict(int64_t token, int64_t from, int64_t target,
                         std::vector<int32_t>& out) = 0;
    // Token `token` is complete: every layer's experts are now history. Tokens are observed in
    // trace order.
    virtual void observe(int64_t token) {}
};

// "oracle:ACC" (ACC in [0, 1]), "oracle" (ACC = 0.8), "history" or "lookahead" (the trace must
// hold one); throws otherwise.
std::unique_ptr<ExpertPredictor> make_expert_predictor(const std::string& spec,
                                                       const RoutingTrace& trace, int64_t n_experts,
                                                       uint64_t seed);

}  // namespace tandem

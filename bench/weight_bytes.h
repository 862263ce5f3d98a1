// Bytes of weights a decode step reads, the denominator of the bandwidth bound
// (reference/models.md 3.1): decode tokens/s <= bandwidth / bytes per token.
//
// Counted per step for `batch` sequences that each decode one token: attention, routers, the
// routed experts the step touches, shared experts, dense FFN layers and the lm_head; the
// embedding row and the KV cache are left out (small at the context lengths benchmarked).
// Weight matrices are counted in `weight_type`, routers in `router_type` (load-time
// quantization leaves routers as stored; GGUF files hold them in f32).
// With batch > 1 the experts touched are estimated for uniform routing: each layer uses
// E * (1 - (1 - k/E)^batch) distinct experts on average. Real routers are skewed and touch fewer,
// so the bound of a batched row is a rough one.
#pragma once

#include "kernels/dtype.h"
#include "models/config.h"

namespace tandem::bench {

struct StepBytes {
    double attention = 0;
    double routers = 0;
    double routed_experts = 0;
    double shared_experts = 0;
    double dense_ffn = 0;
    double lm_head = 0;
    double total() const {
        return attention + routers + routed_experts + shared_experts + dense_ffn + lm_head;
    }
};

StepBytes decode_step_bytes(const ModelConfig& config, DType weight_type, DType router_type,
                            int batch = 1);

// Parameters of the whole model, embeddings included (what "7B" in a name counts).
double parameter_count(const ModelConfig& config);

}  // namespace tandem::bench

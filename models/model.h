// Model: what the engine sees of an architecture. One forward() call runs a batch of sequences,
// each contributing any number of new tokens (a prefill chunk or one decode token), and
// returns logits for the rows that were asked for.
//
// Model code is math only: it never decides where an expert runs or how much memory a device
// may use (that is cache/ and scheduler/), and it reads no global state.
#pragma once

#include <functional>
#include <memory>
#include <span>
#include <string>

#include "cache/kv_cache.h"
#include "kernels/tensor.h"
#include "kernels/thread_pool.h"
#include "models/config.h"
#include "scheduler/routing.h"

namespace tandem {

class ExpertRunner;

struct SequenceStep {
    std::span<const int32_t> tokens;  // new tokens, appended after cache->length()
    KvCache* cache = nullptr;         // this sequence's cache, advanced by tokens.size()
    bool all_logits = false;          // logits for every new token, else only for the last
};

// The experts every MoE layer chose for every token of a step, when forward() is asked for them
// (to return them to the caller, record traces or replay routing).
struct StepRouting {
    // In: also predict, from each MoE layer's input, what the routers of the next `lookahead`
    // layers would choose (the gate lookahead a prefetcher can use), up to 3.
    int lookahead = 0;
    std::vector<int> layers;       // model layer index of each entry
    std::vector<Routing> routing;  // per entry: every row of the step, in order
    // [entry][j - 1]: layer layers[entry] + j's router applied to this entry's MoE input (the
    // post-attention RMS-normed hidden state); empty where that layer is not an MoE layer.
    std::vector<std::vector<Routing>> predicted;
    // In: also keep every expert's router probability. Out: [entry] [n_rows, n_experts] by
    // expert id (models/blocks/moe_block.h: router_probabilities); the CPU decoder only.
    bool want_probabilities = false;
    std::vector<std::vector<float>> probabilities;
};

// Bytes of weights processed so far and in all, reported as a slow load step goes.
using WeightProgress = std::function<void(int64_t done, int64_t total)>;

class Model {
  public:
    virtual ~Model() = default;
    virtual const ModelConfig& config() const = 0;

    // Runs one step. Returns logits [n_rows, vocab_size] f32, rows in the order of `steps`.
    // On error nothing is committed to any cache. With `routing`, also fills in the routing of
    // every token of the step.
    virtual OwnedTensor forward(std::span<const SequenceStep> steps, ThreadPool& pool,
                                StepRouting* routing = nullptr) = 0;

    // Sizes the memory of a step's temporaries for steps of up to `max_tokens` tokens, so that
    // forward() allocates none of it; a larger step still runs (the memory grows before it).
    virtual void reserve_scratch(int64_t max_tokens) {}

    // Shape of a KV cache for one sequence of up to `capacity` positions.
    virtual KvCacheShape kv_cache_shape(int64_t capacity) const = 0;

    // Routed experts run on `runner` from now on (nullptr: on the CPU pool of forward()). The
    // runner is bound to this model's weights here; it must outlive its use by this model.
    virtual void set_expert_runner(ExpertRunner* runner);

    // Quantizes the weight matrices (attention, experts, dense FFNs, lm_head) to `type`, in
    // place, before the first forward(). Embeddings, norms and routers keep their type.
    // `progress`, if set, gets the bytes quantized so far after each matrix.
    virtual void quantize_weights(DType type, ThreadPool& pool, const WeightProgress& progress);
};

// Loads the Hugging Face model directory `path` (config.json, safetensors,
// generation_config.json) with the architecture its config names, or a GGUF file (`*.gguf`, or
// any file of a split model `*-00001-of-0000N.gguf`; models/gguf_loader.h). Throws tandem::Error
// naming what is wrong.
std::unique_ptr<Model> load_model(const std::string& path);

// The `architectures` values load_model() accepts.
std::vector<std::string> supported_architectures();

}  // namespace tandem

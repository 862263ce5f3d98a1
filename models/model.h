// Model: what the engine sees of an architecture. One forward() call runs a batch of sequences,
// each contributing any number of new tokens (a prefill chunk or one decode token), and
// returns logits for the rows that were asked for.
//
// Model code is math only: it never decides where an expert runs or how much memory a device
// may use (that is cache/ and scheduler/), and it reads no global state.
#pragma once

#include <memory>
#include <span>
#include <string>

#include "cache/kv_cache.h"
#include "kernels/tensor.h"
#include "kernels/thread_pool.h"
#include "models/config.h"

namespace tandem {

struct SequenceStep {
    std::span<const int32_t> tokens;  // new tokens, appended after cache->length()
    KvCache* cache = nullptr;         // this sequence's cache, advanced by tokens.size()
    bool all_logits = false;          // logits for every new token, else only for the last
};

class Model {
  public:
    virtual ~Model() = default;
    virtual const ModelConfig& config() const = 0;

    // Runs one step. Returns logits [n_rows, vocab_size] f32, rows in the order of `steps`.
    // On error nothing is committed to any cache.
    virtual OwnedTensor forward(std::span<const SequenceStep> steps, ThreadPool& pool) = 0;

    // Shape of a KV cache for one sequence of up to `capacity` positions.
    virtual KvCacheShape kv_cache_shape(int64_t capacity) const = 0;

    // Quantizes the weight matrices (attention, experts, dense FFNs, lm_head) to `type`, in
    // place, before the first forward(). Embeddings, norms and routers keep their type.
    virtual void quantize_weights(DType type, ThreadPool& pool);
};

// Loads the Hugging Face model directory `path` (config.json, safetensors,
// generation_config.json) with the architecture its config names, or a GGUF file (`*.gguf`, or
// any file of a split model `*-00001-of-0000N.gguf`; models/gguf_loader.h). Throws tandem::Error
// naming what is wrong.
std::unique_ptr<Model> load_model(const std::string& path);

// The `architectures` values load_model() accepts.
std::vector<std::string> supported_architectures();

}  // namespace tandem

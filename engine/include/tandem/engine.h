// The embedded C++ API of Tandem.
//
//   tandem::Engine engine = tandem::Engine::open({.model_dir = "path/to/hf-model"});
//   tandem::RequestOutput out = engine.generate(tandem::Prompt::from_text("Once upon a time"),
//                                               {.temperature = 0, .max_tokens = 32});
//   std::cout << out.completions[0].text;
//
// An Engine owns the model (memory-mapped weights), the worker threads, the paged KV cache and
// one scheduler thread that runs continuous batching: every step, waiting requests join while
// there is KV memory for them (first come, first served), long prompts are prefilled in chunks
// next to the ongoing decodes, and finished sequences leave. All public methods are
// thread-safe. Errors: RequestError for a bad request, QueueFullError when too many wait,
// tandem::Error (a std::runtime_error) for files and configuration; a failed call leaves the
// engine usable. Engine::open checks the whole EngineConfig before it starts a thread or reads a
// file, and one error names every bad field (check_engine_config runs that check alone).
// The library reads no environment variable: every policy is a field below.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <tandem/model_config.h>
#include <tandem/request.h>
#include <tandem/sampling.h>

namespace tandem {

// How far Engine::open (and reload_weights) is with the slow parts of preparing the weights:
// load-time quantization (`quantize`) and the copy of every weight to a GPU (`device`). The
// checkpoint itself is memory-mapped, so reading it costs nothing up front.
struct LoadProgress {
    std::string_view stage;  // "quantize" or "upload to cuda:N"
    int64_t done = 0;        // bytes of weights finished, non-decreasing within a stage
    int64_t total = 0;       // bytes of the stage; done == total once, at its end
};
using LoadProgressCallback = std::function<void(const LoadProgress&)>;

struct EngineConfig {
    std::string model_dir;  // a Hugging Face model directory or a .gguf file
    // 0: one per physical core. Above the hardware threads Engine::open warns; above
    // max(64, 4 x the hardware threads) it refuses.
    int n_threads = 0;
    bool pin_threads = true;  // pin workers to physical cores
    // Use the cores' hyperthreads too (n_threads 0 then means one per hardware thread); off by
    // default since the kernels saturate a core's memory or FMA units with one thread.
    bool hyperthreads = false;
    // NUMA tensor parallelism of the routed experts (README "NUMA"): "auto" on a machine with
    // more than one NUMA node, "off", or "distribute" (always, even on one node). Each node's
    // pool computes a slice of every expert from its own copy of that slice in its own memory.
    std::string numa = "auto";
    // A hwloc synthetic topology ("numa:2 core:4 pu:1") used instead of this machine's for the
    // NUMA decision and pools: runs the multi-node path anywhere (nothing is pinned or bound).
    std::string numa_topology;
    int64_t context_length = 0;  // 0: the model's max_position_embeddings
    // "": weights as stored; "q8_0", "q5_0", "q4_0", "q4_k", "q5_k" or "q6_k" quantized at load.
    std::string quantize;
    std::string cpu_isa;  // "": best the CPU runs; "scalar", "avx2", "avx512" to force one
    // Where the model runs: "cpu", or "cuda:N" for the whole decoder on a GPU (weights and KV
    // cache in device memory; models/device_decoder.h). Quantization happens on the CPU first.
    std::string device = "cpu";
    // On cuda:N: decode steps captured and replayed as CUDA graphs (one launch per step instead
    // of dozens per layer). Off by default until it has been verified on a GPU.
    bool cuda_graphs = false;
    // Every token's logits independent of the rest of its step, bit for bit (scoring that must
    // reproduce sampling exactly, as RL post-training wants). Switches off the large-M tile path
    // of the CPU kernels (kernels/cpu/tile_gemm.h), which prefill uses from a few tokens per
    // weight matrix up (prefill is then 1.4-4x slower), and the several-row Q4_K dots of
    // one-token products (decode somewhat slower). Process-wide, like cpu_isa.
    bool batch_invariant = false;
    // The large-M tile path of the CPU kernels (kernels/cpu/tile_gemm.h): "auto" (from a few
    // tokens per weight matrix up), "never" (always the dot products), "always" (from one token;
    // for A/B runs); "": keep the process's policy (auto unless a program set another).
    // Process-wide, like cpu_isa.
    std::string tile_gemm;
    int64_t kv_cache_bytes = 0;  // KV memory budget; 0: enough for max_sequences x 4096 positions
                                 // or the context, whichever is less, capped at 4 GiB
    int64_t kv_block_size = 16;  // positions per KV block
    // Automatic prefix caching: full KV blocks are kept, keyed by their token ids and all those
    // before them, and a request whose prompt starts with cached blocks skips their prefill
    // (README "KV cache"). Cached blocks no sequence holds are evicted, least recently used
    // first, when memory is needed; reload_weights empties the cache.
    bool prefix_caching = true;
    // Admission reserves the KV blocks of prompt + max_tokens for every sample (the rest of the
    // context without max_tokens), so nothing is ever preempted, at the cost of far fewer
    // requests at once. Off: blocks are allocated as sequences grow, and when the pool runs out
    // the most recently admitted request is preempted and later recomputed.
    bool kv_reserve_max_tokens = false;
    // Element type of the cached keys and values: "f32", "f16" or "bf16". f16/bf16 halve the
    // bytes per position (twice the positions in the same kv_cache_bytes, half the bytes that
    // decode attention reads) at the cost of rounding keys and values once, when written. f16 by
    // default, as llama.cpp: the logits stay within 2e-3 relative L2 of an f32 cache's on every
    // golden architecture (README "KV cache"); "f32" where results must not round there.
    std::string kv_cache_type = "f16";
    int max_sequences = 64;           // sequences in one step at most
    int64_t max_step_tokens = 512;    // tokens in one step at most (prefill chunks + decodes)
    int max_waiting_requests = 1024;  // beyond this, submit() throws QueueFullError

    // Hybrid execution of the routed experts (README "Hybrid runtime"). "": every expert runs on
    // the CPU. "sim": the emulated device (runs anywhere; for tests and what-if runs). "cuda:N":
    // a GPU (cuda::moe_experts; the model itself runs on `device`). The fields below, except
    // replay_routing, only apply with an expert device: set without one, they are an error.
    std::string expert_device;
    int64_t gpu_expert_budget = -1;    // device bytes for expert slots; -1: use gpu_expert_ratio
    double gpu_expert_ratio = 0.25;    // of all routed experts, when no byte budget is set
    std::string cache_policy = "mrs";  // mrs, lru, lfu, static
    std::string planner = "hybrimoe";  // hybrimoe, static, fiddler, gpu-stream, cpu-only
    bool prefetch = true;              // impact-driven prefetch of the next 3 layers' experts
    // Cost model: a hardware profile (JSON, tools/profiles/), or "" to measure it on this machine
    // at start-up, cached in calibration_file ("": not cached, measured at every open; the tools
    // pass $XDG_CACHE_HOME/tandem/calibration.json or ~/.cache/tandem/calibration.json).
    std::string hardware_profile;
    std::string calibration_file;
    bool recalibrate = false;  // measure even when a cached calibration exists
    // Routing replay: every MoE layer takes its experts and weights from this routing trace
    // (formats of tools/README.md), token by token, instead of from its router; the prefetcher
    // then predicts with replay_predictor ("oracle:ACC" or "history", as tandem-sim).
    std::string replay_routing;
    std::string replay_predictor = "oracle:0.8";
    // A routing profile (a trace, e.g. from --record-routing or a calibration run): its most
    // activated experts warm the device at start-up and are `static`'s frozen set, as
    // kTransformers chooses it. "": the replayed trace's when replaying, else an even spread.
    std::string warm_profile;
    // Called on the thread that opens the engine as the weights are prepared (LoadProgress);
    // empty: nothing is reported. The library never prints progress itself.
    LoadProgressCallback on_load_progress;
};

// A tensor in the caller's memory, for Engine::load_weights: `data` holds the elements of `shape`
// (outermost first, as safetensors stores it) packed row-major, of `dtype` named as safetensors
// names it ("F32", "F16", "BF16"); aligned to the element size.
struct WeightView {
    std::string dtype;
    std::vector<int64_t> shape;
    const void* data = nullptr;
};

struct EngineStats {
    int64_t waiting_requests = 0;
    int64_t running_requests = 0;
    int64_t active_sequences = 0;
    int64_t kv_blocks_used = 0;    // held by a sequence
    int64_t kv_blocks_cached = 0;  // held by none, kept for the prefix cache (evicted on demand)
    int64_t kv_blocks_free = 0;    // held by none, holding nothing reusable
    int64_t kv_blocks_total = 0;
    // Prefix caching, in positions: those of the prompts admitted (and readmitted after a
    // preemption) and those of them found cached, whose prefill was skipped.
    int64_t prefix_cache_queries = 0;
    int64_t prefix_cache_hits = 0;
    int64_t preemptions = 0;  // requests that gave their KV blocks back to make room
    int64_t prompt_tokens_total = 0;
    int64_t generated_tokens_total = 0;
    int64_t steps_total = 0;
    // The hybrid runtime's counters; 0 while every expert runs on the CPU.
    int64_t expert_cache_hits = 0;
    int64_t expert_cache_misses = 0;
    int64_t expert_cache_evictions = 0;
    int64_t expert_bytes_moved = 0;  // demand copies and prefetches
    int64_t expert_prefetches = 0;
    int64_t expert_prefetches_used = 0;  // accessed before eviction
    int64_t experts_on_cpu = 0;          // expert jobs computed by the CPU pool
    int64_t experts_on_device = 0;
    // NUMA nodes the routed experts are split over (EngineConfig.numa); 0: not split.
    int64_t numa_nodes = 0;
};

// Checks every field of `config` as Engine::open does first, without starting a thread or
// reading a file (model_dir, replay_routing and hardware_profile are only checked to exist).
// Throws tandem::Error naming every bad field by its name here, one per line.
void check_engine_config(const EngineConfig& config);

// The library's version, "MAJOR.MINOR.PATCH" (the CMake project's).
std::string_view version();

class Engine {
  public:
    static Engine open(const EngineConfig& config);
    Engine(Engine&&) noexcept;
    Engine& operator=(Engine&&) noexcept;
    ~Engine();  // aborts what is still running

    // Queues a request and returns at once; `on_delta`, if set, streams its tokens.
    RequestHandle submit(const Prompt& prompt, const SamplingParams& params,
                         StreamCallback on_delta = {});
    // submit() and wait().
    RequestOutput generate(const Prompt& prompt, const SamplingParams& params);

    // The logprob of each token of `token_ids` after the first, given the tokens before it
    // (size token_ids.size() - 1), computed in the same batches as generation.
    std::vector<float> score(std::span<const int32_t> token_ids);

    // Replaces the weights with those of the checkpoint in `dir`, which must have the same
    // architecture and shapes. Happens between two steps; running requests continue with the
    // new weights (their cached keys and values were computed with the old ones). The prefix
    // cache is emptied: later requests compute every position with the new weights.
    void reload_weights(const std::string& dir);
    // reload_weights from tensors in memory (a trainer's parameters, no file in between), named
    // as in the checkpoint ("model.layers.0.self_attn.q_proj.weight"); every tensor the
    // architecture binds must be there, with the loaded model's shapes. The model reads them in
    // place, without a copy (unless EngineConfig.quantize or a cuda device makes its own), until
    // the next reload: `owner` is kept alive that long, and the memory must not change meanwhile.
    // Needs an engine opened from a model directory, whose config.json describes the tensors.
    void load_weights(std::map<std::string, WeightView> weights, std::shared_ptr<const void> owner);

    // Text <-> tokens with the model's tokenizer; throw RequestError if the model has none.
    bool has_tokenizer() const;
    std::vector<int32_t> tokenize(const Prompt& prompt) const;
    std::string detokenize(std::span<const int32_t> ids, bool skip_special_tokens = true) const;
    std::string token_text(int32_t id) const;  // one token's raw bytes, for logprob listings
    // The tokenizer's chat template (Jinja source); empty without one.
    std::string chat_template() const;

    // The loaded model's hyperparameters (<tandem/model_config.h>); those of the first checkpoint
    // (a reload must match them).
    const ModelConfig& model_config() const;
    std::string model_name() const;  // the model directory's last component
    int64_t context_length() const;
    int64_t vocab_size() const;
    EngineStats stats() const;
    int thread_count() const;  // the worker threads of the engine's pool

  private:
    // In-tree code (tests, benchmarks) reaches the model and the pool through it
    // (engine/src/engine_internals.h); they are not part of the installed API.
    friend struct EngineInternals;
    struct State;
    explicit Engine(std::unique_ptr<State> state);
    std::unique_ptr<State> state_;
};

}  // namespace tandem

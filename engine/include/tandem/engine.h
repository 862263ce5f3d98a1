// The embedded C++ API of Tandem.
//
//   tandem::Engine engine = tandem::Engine::open({.model_dir = "path/to/hf-model"});
//   tandem::Generation out = engine.generate(prompt_ids, {.temperature = 0, .max_tokens = 32});
//
// An Engine owns the model (memory-mapped weights), the worker threads and nothing global; two
// engines can live in one process. Errors are tandem::Error exceptions whose message names the
// file, tensor or parameter at fault; a failed call leaves the engine usable.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include <tandem/sampling.h>

namespace tandem {

struct ModelConfig;
class Model;
class ThreadPool;

struct EngineConfig {
    std::string model_dir;       // a Hugging Face model directory or a .gguf file
    int n_threads = 0;           // 0: one per physical core
    bool pin_threads = true;     // pin workers to physical cores
    int64_t context_length = 0;  // 0: the model's max_position_embeddings
    std::string quantize;        // "": weights as stored; "q8_0", "q4_0", "q4_k", "q5_k", "q6_k"
    std::string cpu_isa;         // "": best the CPU runs; "scalar", "avx2", "avx512" to force one
};

enum class FinishReason { Stop, Length };

struct GenerationTimings {
    int64_t prefill_tokens = 0;
    int64_t decode_tokens = 0;  // forward passes after the prefill
    double prefill_seconds = 0;
    double decode_seconds = 0;

    double prefill_tokens_per_second() const;
    double decode_tokens_per_second() const;
};

struct Generation {
    std::vector<int32_t> tokens;  // generated ids, without the prompt
    FinishReason finish_reason = FinishReason::Length;
    GenerationTimings timings;
};

class Engine {
  public:
    static Engine open(const EngineConfig& config);
    Engine(Engine&&) noexcept;
    Engine& operator=(Engine&&) noexcept;
    ~Engine();

    // Generates up to params.max_tokens tokens after `prompt` (token ids). Stops at an EOS token of
    // the model unless params.ignore_eos, or at the context length (finish reason Length).
    Generation generate(std::span<const int32_t> prompt, const SamplingParams& params);

    const ModelConfig& model_config() const;
    int64_t context_length() const;
    Model& model();
    ThreadPool& thread_pool();

  private:
    struct State;
    explicit Engine(std::unique_ptr<State> state);
    std::unique_ptr<State> state_;
};

std::string_view finish_reason_name(FinishReason reason);  // "stop", "length"

}  // namespace tandem

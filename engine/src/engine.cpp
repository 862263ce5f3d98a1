#include <tandem/engine.h>
#include <algorithm>
#include <chrono>
#include <optional>

#include "kernels/cpu/cpu_isa.h"
#include "kernels/device.h"
#include "kernels/error.h"
#include "kernels/log.h"
#include "kernels/thread_pool.h"
#include "models/model.h"

namespace tandem {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
    return std::chrono::duration<double>(Clock::now() - start).count();
}

}  // namespace

double GenerationTimings::prefill_tokens_per_second() const {
    return prefill_seconds > 0 ? double(prefill_tokens) / prefill_seconds : 0.0;
}

double GenerationTimings::decode_tokens_per_second() const {
    return decode_seconds > 0 ? double(decode_tokens) / decode_seconds : 0.0;
}

std::string_view finish_reason_name(FinishReason reason) {
    return reason == FinishReason::Stop ? "stop" : "length";
}

struct Engine::State {
    EngineConfig config;
    std::unique_ptr<ThreadPool> pool;
    std::unique_ptr<Model> model;
    int64_t context_length = 0;
};

Engine::Engine(std::unique_ptr<State> state) : state_(std::move(state)) {}
Engine::Engine(Engine&&) noexcept = default;
Engine& Engine::operator=(Engine&&) noexcept = default;
Engine::~Engine() = default;

Engine Engine::open(const EngineConfig& config) {
    if (config.model_dir.empty()) fail("EngineConfig.model_dir is empty");
    if (config.context_length < 0) fail("EngineConfig.context_length must be >= 0");
    auto state = std::make_unique<State>();
    state->config = config;
    if (cuda_compiled()) cuda_device_count();  // logs once when built with CUDA but no GPU is here
    state->pool = std::make_unique<ThreadPool>(
        ThreadPoolOptions{.n_threads = config.n_threads, .pin = config.pin_threads});
    if (!config.cpu_isa.empty()) cpu::force_isa(cpu::parse_isa(config.cpu_isa));
    std::optional<DType> quantize;
    if (!config.quantize.empty()) {
        quantize = dtype_from_name(config.quantize);
        if (!quantize || !is_quantized_weight_type(*quantize))
            fail("EngineConfig.quantize: '", config.quantize,
                 "' is not one of q8_0, q4_0, q4_k, q5_k, q6_k");
    }
    state->model = load_model(config.model_dir);
    if (quantize) state->model->quantize_weights(*quantize, *state->pool);
    const int64_t model_max = state->model->config().max_position_embeddings;
    state->context_length = config.context_length == 0 ? model_max : config.context_length;
    if (state->context_length > model_max)
        log_warn("context length ", state->context_length,
                 " exceeds the model's max_position_embeddings ", model_max);
    log_info("loaded ", state->model->config().architecture, " from ", config.model_dir, " with ",
             state->pool->size(), " threads");
    return Engine(std::move(state));
}

const ModelConfig& Engine::model_config() const {
    return state_->model->config();
}
int64_t Engine::context_length() const {
    return state_->context_length;
}
Model& Engine::model() {
    return *state_->model;
}
ThreadPool& Engine::thread_pool() {
    return *state_->pool;
}

Generation Engine::generate(std::span<const int32_t> prompt, const SamplingParams& params) {
    validate(params);
    const ModelConfig& config = model_config();
    if (prompt.empty()) fail("prompt is empty");
    if (int64_t(prompt.size()) >= state_->context_length)
        fail("prompt of ", prompt.size(), " tokens does not fit the context length of ",
             state_->context_length, " (it must leave room for one generated token)");
    const int64_t capacity =
        std::min<int64_t>(state_->context_length, int64_t(prompt.size()) + params.max_tokens);
    KvCache cache(
        state_->model->kv_cache_shape(std::max<int64_t>(capacity, int64_t(prompt.size()))));
    Sampler sampler(params);
    Generation out;
    if (params.max_tokens == 0) return out;

    auto is_eos = [&](int32_t token) {
        return !params.ignore_eos &&
               std::find(config.eos_token_ids.begin(), config.eos_token_ids.end(), token) !=
                   config.eos_token_ids.end();
    };
    const auto prefill_start = Clock::now();
    const SequenceStep prefill{.tokens = prompt, .cache = &cache};
    OwnedTensor logits = state_->model->forward({&prefill, 1}, *state_->pool);
    out.timings.prefill_tokens = int64_t(prompt.size());
    out.timings.prefill_seconds = seconds_since(prefill_start);

    const auto decode_start = Clock::now();
    for (;;) {
        const int32_t token =
            sampler.sample({logits.view.data_as<const float>(), size_t(config.vocab_size)});
        out.tokens.push_back(token);
        if (is_eos(token)) {
            out.finish_reason = FinishReason::Stop;
            break;
        }
        if (int64_t(out.tokens.size()) >= params.max_tokens || cache.length() >= cache.capacity()) {
            out.finish_reason = FinishReason::Length;
            break;
        }
        const SequenceStep step{.tokens = {&out.tokens.back(), 1}, .cache = &cache};
        logits = state_->model->forward({&step, 1}, *state_->pool);
        ++out.timings.decode_tokens;
    }
    out.timings.decode_seconds = seconds_since(decode_start);
    return out;
}

}  // namespace tandem

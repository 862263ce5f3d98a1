#include <tandem/engine.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <optional>
#include <random>
#include <thread>

#include "cache/kv_cache.h"
#include "engine/src/chat_prompt.h"
#include "engine/src/engine_config.h"
#include "engine/src/engine_internals.h"
#include "engine/src/hybrid_setup.h"
#include "engine/src/scheduler.h"
#include "engine/src/structured_output.h"
#include "kernels/cpu/cpu_isa.h"
#include "kernels/cpu/tile_gemm.h"
#include "kernels/device.h"
#include "kernels/error.h"
#include "kernels/log.h"
#include "models/architectures/architectures.h"
#include "models/device_decoder.h"
#include "models/model_tokenizer.h"
#include "models/tokenizer/chat_template.h"

namespace tandem {

namespace {

constexpr int64_t kDefaultKvPositionsPerSequence = 4096;
constexpr int64_t kDefaultKvBytesCap = int64_t(4) << 30;

// One stage of EngineConfig.on_load_progress as the models report it; empty when nobody listens.
WeightProgress stage_progress(const LoadProgressCallback& callback, std::string stage) {
    if (!callback) return {};
    return [callback, stage = std::move(stage)](int64_t done, int64_t total) {
        callback({.stage = stage, .done = done, .total = total});
    };
}

DeviceModelOptions device_options(const EngineConfig& config, Device device) {
    return {
        .cuda_graphs = config.cuda_graphs,
        .routed_experts_on_host = !config.expert_device.empty(),
        .upload_progress = stage_progress(config.on_load_progress, "upload to " + device.name())};
}

// A directory's tokenizer.json or a GGUF file's tokenizer metadata; none is fine (token ids
// only), a broken one is an error.
std::optional<Tokenizer> load_tokenizer_if_present(const std::string& model_path) {
    namespace fs = std::filesystem;
    if (fs::is_directory(model_path) && !fs::exists(fs::path(model_path) / "tokenizer.json"))
        return std::nullopt;
    if (!fs::is_directory(model_path)) {
        try {
            return load_tokenizer(model_path);
        } catch (const Error& e) {
            log_warn("no tokenizer: ", e.what(), "; requests must send token ids");
            return std::nullopt;
        }
    }
    return load_tokenizer(model_path);
}

// The KV pool: the configured budget, or room for every sequence slot at a typical length.
int64_t kv_blocks(const EngineConfig& config, const KvCacheShape& shape, int64_t context) {
    const auto block_bytes = int64_t(KvBlockPool::bytes_per_block(shape, config.kv_block_size));
    int64_t budget = config.kv_cache_bytes;
    if (budget == 0)
        budget =
            std::min(kDefaultKvBytesCap, int64_t(config.max_sequences) *
                                             std::min(context, kDefaultKvPositionsPerSequence) /
                                             config.kv_block_size * block_bytes);
    const int64_t blocks = budget / block_bytes;
    if (blocks < 1)
        fail("EngineConfig.kv_cache_bytes: ", budget, " bytes do not hold one KV block of ",
             block_bytes, " bytes");
    return blocks;
}

void check_same_shape(const ModelConfig& a, const ModelConfig& b, const std::string& dir) {
    if (a.architecture != b.architecture || a.n_layers != b.n_layers ||
        a.hidden_dim != b.hidden_dim || a.n_heads != b.n_heads || a.n_kv_heads != b.n_kv_heads ||
        a.head_dim != b.head_dim || a.vocab_size != b.vocab_size || a.n_experts != b.n_experts ||
        a.n_experts_active != b.n_experts_active)
        throw RequestError("reload_weights: " + dir + " holds a " + b.architecture + " with " +
                           std::to_string(b.n_layers) + " layers and hidden size " +
                           std::to_string(b.hidden_dim) + ", not the loaded " + a.architecture +
                           "'s shape");
}

}  // namespace

std::string_view version() {
    return TANDEM_VERSION;
}

std::string_view finish_reason_name(FinishReason reason) {
    switch (reason) {
        case FinishReason::Stop: return "stop";
        case FinishReason::Length: return "length";
        case FinishReason::Abort: return "abort";
        case FinishReason::Error: return "error";
    }
    return "unknown";
}

void RequestHandle::abort() {
    if (state_) state_->abort_requested = true;
}

bool RequestHandle::finished() const {
    if (!state_) return true;
    std::lock_guard lock(state_->mutex);
    return state_->done;
}

const RequestOutput& RequestHandle::wait() {
    if (!state_) fail("RequestHandle::wait on an empty handle");
    std::unique_lock lock(state_->mutex);
    state_->finished_cv.wait(lock, [&] { return state_->done; });
    return state_->output;
}

uint64_t RequestHandle::id() const {
    return state_ ? state_->id : 0;
}

struct Engine::State {
    EngineConfig config;
    std::unique_ptr<ThreadPool> pool;
    std::optional<Tokenizer> tokenizer;
    ModelConfig model_config;  // of the first checkpoint; reloads must match its shape
    int64_t context_length = 0;
    std::optional<DType> quantize;
    Device device;  // of the model: cpu or cuda:N
    std::atomic<uint64_t> next_id{1};
    std::mutex reload_mutex;
    ExpertRunners experts;  // hybrid executor, routing replay; empty: the CPU and the routers
    // Structured output: made at the first request with a grammar (reading a large vocabulary
    // takes a moment that other runs need not pay); it caches compiled grammars.
    std::mutex grammar_mutex;
    std::unique_ptr<GrammarCompiler> grammar_compiler;
    std::unique_ptr<Scheduler> scheduler;  // last: stops before the rest goes
};

Engine::Engine(std::unique_ptr<State> state) : state_(std::move(state)) {}
Engine::Engine(Engine&&) noexcept = default;
Engine& Engine::operator=(Engine&&) noexcept = default;
Engine::~Engine() = default;

Engine Engine::open(const EngineConfig& config) {
    const ParsedEngineConfig parsed = parse_engine_config(config);  // before any thread or file
    if (const int hardware = int(std::thread::hardware_concurrency());
        hardware > 0 && config.n_threads > hardware)
        log_warn("EngineConfig.n_threads: ", config.n_threads, " workers on ", hardware,
                 " hardware threads: they will take turns on the cores (slower, not faster)");
    auto state = std::make_unique<State>();
    state->config = config;
    // Says once why there is no GPU, if so; asked only for a GPU, since asking loads the CUDA
    // backend (kernels/cuda_backend.h), which a CPU run does without.
    if (parsed.device.kind == DeviceKind::Cuda) cuda_device_count();
    state->pool =
        std::make_unique<ThreadPool>(ThreadPoolOptions{.n_threads = config.n_threads,
                                                       .pin = config.pin_threads,
                                                       .hyperthreads = config.hyperthreads});
    if (parsed.cpu_isa) cpu::force_isa(*parsed.cpu_isa);
    if (config.batch_invariant) cpu::set_batch_invariant_kernels(true);
    if (parsed.tile_gemm) cpu::set_tile_gemm_policy(*parsed.tile_gemm);
    state->quantize = parsed.quantize;
    state->device = parsed.device;
    std::unique_ptr<Model> model = load_model(config.model_dir);
    if (state->quantize)
        model->quantize_weights(*state->quantize, *state->pool,
                                stage_progress(config.on_load_progress, "quantize"));
    if (!state->device.is_cpu())
        model = make_device_model(std::move(model), state->device,
                                  device_options(config, state->device));
    state->experts = make_expert_runners(config, *model, *state->pool);
    state->tokenizer = load_tokenizer_if_present(config.model_dir);
    state->model_config = model->config();
    const int64_t model_max = model->config().max_position_embeddings;
    state->context_length = config.context_length == 0 ? model_max : config.context_length;
    if (state->context_length > model_max)
        log_warn("context length ", state->context_length,
                 " exceeds the model's max_position_embeddings ", model_max);
    KvCacheShape shape = model->kv_cache_shape(1);
    shape.dtype = parsed.kv_cache_type;
    auto blocks = std::make_shared<KvBlockPool>(shape, config.kv_block_size,
                                                kv_blocks(config, shape, state->context_length));
    log_info("loaded ", model->config().architecture, " from ", config.model_dir, " with ",
             state->pool->size(), " threads; KV cache ", blocks->total_blocks(), " blocks of ",
             config.kv_block_size, " positions in ", dtype_name(shape.dtype), " (",
             double(blocks->total_blocks()) *
                 double(KvBlockPool::bytes_per_block(shape, config.kv_block_size)) / (1 << 20),
             " MiB)");
    state->scheduler = std::make_unique<Scheduler>(
        std::move(blocks), std::move(model), *state->pool,
        state->tokenizer ? &*state->tokenizer : nullptr,
        SchedulerOptions{.context_length = state->context_length,
                         .max_sequences = config.max_sequences,
                         .max_step_tokens = config.max_step_tokens,
                         .max_waiting_requests = config.max_waiting_requests,
                         .prefix_caching = config.prefix_caching,
                         .reserve_max_tokens = config.kv_reserve_max_tokens,
                         .expert_runner = state->experts.runner()});
    return Engine(std::move(state));
}

bool Engine::has_tokenizer() const {
    return state_->tokenizer.has_value();
}

std::vector<int32_t> Engine::tokenize(const Prompt& prompt) const {
    if (!prompt.token_ids.empty()) return prompt.token_ids;
    if (!state_->tokenizer)
        throw RequestError("the model at " + state_->config.model_dir +
                           " has no tokenizer.json: send token ids");
    const Tokenizer& tok = *state_->tokenizer;
    try {
        if (!prompt.messages.empty()) {
            const std::string text = render_chat_prompt(tok, prompt);
            // The template writes the special tokens itself (as transformers does).
            return tok.encode(text, {.add_special_tokens = false});
        }
        return tok.encode(prompt.text, {.add_special_tokens = prompt.add_special_tokens});
    } catch (const Error& e) {
        throw RequestError(e.what());
    }
}

std::string Engine::detokenize(std::span<const int32_t> ids, bool skip_special_tokens) const {
    if (!state_->tokenizer) throw RequestError("the model has no tokenizer.json");
    for (int32_t id : ids)
        if (id < 0 || id >= vocab_size())
            throw RequestError("token id " + std::to_string(id) + " is outside the vocabulary of " +
                               std::to_string(vocab_size()));
    return state_->tokenizer->decode(ids, {.skip_special_tokens = skip_special_tokens});
}

std::string Engine::chat_template() const {
    return state_->tokenizer ? state_->tokenizer->chat_template() : std::string();
}

std::string Engine::token_text(int32_t id) const {
    if (!state_->tokenizer) return "";
    return state_->tokenizer->decode({&id, 1}, {.skip_special_tokens = false});
}

namespace {

// On the caller's thread, not the scheduler's: a new schema's compilation (milliseconds) delays
// only its own request. (A template, as install_model below, to reach the private State.)
template <class State>
std::shared_ptr<const CompiledGrammar> compile_grammar(State& state, const GrammarSpec& spec) {
    if (!state.tokenizer)
        throw RequestError("structured output needs the model's tokenizer, and the model at " +
                           state.config.model_dir + " has none");
    GrammarCompiler* compiler = nullptr;
    {
        std::lock_guard lock(state.grammar_mutex);
        if (!state.grammar_compiler)
            state.grammar_compiler = std::make_unique<GrammarCompiler>(
                *state.tokenizer, state.model_config.vocab_size, state.model_config.eos_token_ids);
        compiler = state.grammar_compiler.get();
    }
    return compiler->compile(spec);  // thread-safe
}

}  // namespace

RequestHandle Engine::submit(const Prompt& prompt, const SamplingParams& params,
                             StreamCallback on_delta) {
    auto request = std::make_shared<RequestHandle::State>();
    request->id = state_->next_id++;
    request->submitted = Clock::now();
    try {
        validate(params);
    } catch (const Error& e) {
        throw RequestError(e.what());
    }
    request->prompt = tokenize(prompt);
    const std::vector<int32_t>& ids = request->prompt;
    if (ids.empty()) throw RequestError("the prompt is empty");
    for (int32_t id : ids)
        if (id < 0 || id >= vocab_size())
            throw RequestError("prompt token id " + std::to_string(id) +
                               " is outside the vocabulary of " + std::to_string(vocab_size()));
    if (int64_t(ids.size()) >= state_->context_length &&
        !(params.max_tokens == 0 && int64_t(ids.size()) <= state_->context_length))
        throw RequestError("the prompt of " + std::to_string(ids.size()) +
                           " tokens does not fit the context length of " +
                           std::to_string(state_->context_length) +
                           " (it must leave room for one generated token)");
    for (int32_t id : params.stop_token_ids)
        if (id < 0 || id >= vocab_size())
            throw RequestError("stop_token_ids: " + std::to_string(id) +
                               " is outside the vocabulary");
    if (params.grammar) request->grammar = compile_grammar(*state_, *params.grammar);
    request->params = params;
    request->seed = params.seed ? *params.seed : std::random_device{}();
    request->on_delta = std::move(on_delta);
    state_->scheduler->submit(request);
    return RequestHandle(std::move(request));
}

RequestOutput Engine::generate(const Prompt& prompt, const SamplingParams& params) {
    RequestHandle handle = submit(prompt, params);
    return handle.wait();
}

std::vector<float> Engine::score(std::span<const int32_t> token_ids) {
    if (token_ids.size() < 2) throw RequestError("score needs at least two tokens");
    const RequestOutput out = generate(Prompt::tokens({token_ids.begin(), token_ids.end()}),
                                       {.temperature = 0, .max_tokens = 0, .prompt_logprobs = 0});
    if (!out.error.empty()) fail("score: ", out.error);
    std::vector<float> logprobs;
    for (const TokenLogprob& lp : out.prompt_logprobs)
        logprobs.push_back(lp.logprob);
    return logprobs;
}

namespace {

// The tail of reload_weights and load_weights: a freshly bound model of the loaded shape,
// prepared as Engine::open prepares one, swapped in between two steps. (A template so that it
// can take the private Engine::State without a declaration in the public header.)
template <class State>
void install_model(State& state, std::unique_ptr<Model> model, const std::string& origin) {
    check_same_shape(state.model_config, model->config(), origin);
    if (state.quantize)
        model->quantize_weights(*state.quantize, *state.pool,
                                stage_progress(state.config.on_load_progress, "quantize"));
    if (!state.device.is_cpu())
        model = make_device_model(std::move(model), state.device,
                                  device_options(state.config, state.device));
    std::unique_ptr<Model> old = state.scheduler->swap_model(std::move(model));
    log_info("reloaded the weights from ", origin);
}

}  // namespace

void Engine::reload_weights(const std::string& dir) {
    std::lock_guard lock(state_->reload_mutex);
    install_model(*state_, load_model(dir), dir);
}

void Engine::load_weights(std::map<std::string, WeightView> weights,
                          std::shared_ptr<const void> owner) {
    namespace fs = std::filesystem;
    std::lock_guard lock(state_->reload_mutex);
    const fs::path config_path = fs::path(state_->config.model_dir) / "config.json";
    if (!fs::is_regular_file(config_path))
        throw RequestError(
            "load_weights: needs an engine opened from a model directory with a "
            "config.json, not " +
            state_->config.model_dir);
    std::map<std::string, Checkpoint::View> views;
    for (auto& [name, w] : weights) {
        if (!w.data) throw RequestError("load_weights: tensor " + name + " has no data");
        views[name] = {.origin = "load_weights: tensor " + name,
                       .dtype = dtype_from_safetensors(w.dtype),
                       .dtype_name = w.dtype,
                       .shape = std::move(w.shape),
                       .data = static_cast<const std::byte*>(w.data)};
    }
    std::ifstream in(config_path);
    const nlohmann::json json = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
    if (json.is_discarded()) fail(config_path.string(), ": not valid JSON");
    // The same architecture and token ids as the loaded model (the ones Engine::open read).
    const ModelConfig& loaded = state_->model_config;
    ModelConfig config{.architecture = loaded.architecture};
    config.bos_token_id = loaded.bos_token_id;
    config.eos_token_ids = loaded.eos_token_ids;
    const ArchitectureFactory factory = find_architecture_factory(loaded.architecture);
    if (!factory) fail("load_weights: no factory for ", loaded.architecture);
    // Binding errors (a missing tensor, a wrong shape or dtype) are the caller's: a bad request.
    std::unique_ptr<Model> model;
    try {
        model = factory(ConfigReader(json, config_path.string()), std::move(config),
                        Checkpoint::from_views("load_weights", std::move(views), std::move(owner)));
    } catch (const Error& e) {
        throw RequestError(e.what());
    }
    install_model(*state_, std::move(model), "memory (load_weights)");
}

const ModelConfig& Engine::model_config() const {
    return state_->model_config;
}
std::string Engine::model_name() const {
    std::filesystem::path p(state_->config.model_dir);
    if (!p.has_filename()) p = p.parent_path();
    // A directory's name, or a GGUF file's without the extension.
    return std::filesystem::is_regular_file(p) ? p.stem().string() : p.filename().string();
}
int64_t Engine::context_length() const {
    return state_->context_length;
}
int64_t Engine::vocab_size() const {
    return state_->model_config.vocab_size;
}
EngineStats Engine::stats() const {
    EngineStats s = state_->scheduler->stats();
    if (state_->experts.executor) add_hybrid_stats(*state_->experts.executor, s);
    if (state_->experts.numa) s.numa_nodes = state_->experts.numa->n_nodes();
    return s;
}
int Engine::thread_count() const {
    return state_->pool->size();
}

Model& EngineInternals::model(Engine& engine) {
    return engine.state_->scheduler->model();
}

ThreadPool& EngineInternals::thread_pool(Engine& engine) {
    return *engine.state_->pool;
}

}  // namespace tandem

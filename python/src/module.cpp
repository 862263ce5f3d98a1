// The `tandem` Python module: Engine, EngineConfig and SamplingParams over the C++ API of
// <tandem/engine.h>, for programs that drive the engine from Python (a post-training loop's
// rollouts, scoring and weight updates) without the HTTP server in between.
//
// Prompts and outputs are token ids: text goes through the engine's tokenizer (tokenize /
// detokenize). generate() and score() release the GIL while the engine works, so other Python
// threads (a trainer) run meanwhile. Errors: RequestError (a ValueError) for a bad request,
// QueueFullError, and Error (a RuntimeError) for files and configuration, each with the
// engine's message.
#include <nanobind/nanobind.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <string>
#include <vector>

#include "kernels/error.h"
#include "python/src/bindings.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace tandem::python {

namespace {

// Sets the fields named in `kwargs` on `target` (a bound EngineConfig or SamplingParams), so
// that a misspelt field is an error instead of being ignored.
void set_fields(nb::handle target, nb::kwargs kwargs, const char* what) {
    for (auto [key, value] : kwargs) {
        const std::string name = nb::cast<std::string>(key);
        if (name.starts_with("_") || !nb::hasattr(target, name.c_str()))
            throw nb::type_error((std::string(what) + " has no field '" + name + "'").c_str());
        nb::setattr(target, key, value);
    }
}

// A T with the fields named in `kwargs` set (on a temporary Python object: the instance
// under construction in __init__ is not usable from Python yet).
template <class T>
T with_fields(nb::kwargs kwargs, const char* what) {
    nb::object object = nb::cast(T{});
    set_fields(object, kwargs, what);
    return nb::cast<T>(object);
}

// A prompt of token ids: any sequence of ints (a list, a tuple, a 1-D integer array).
std::vector<int32_t> token_ids(nb::handle ids) {
    try {
        return nb::cast<std::vector<int32_t>>(ids);
    } catch (const nb::cast_error&) {
        throw nb::type_error("expected a sequence of token ids (ints)");
    }
}

// One prompt (a sequence of ints) or several (a sequence of such sequences).
bool is_batch(nb::handle prompts) {
    if (!nb::isinstance<nb::list>(prompts) && !nb::isinstance<nb::tuple>(prompts)) return false;
    return nb::len(prompts) > 0 && !nb::isinstance<nb::int_>(prompts[0]);
}

// Submits every prompt before waiting for any, so that they share the engine's batches.
std::vector<RequestOutput> generate_all(Engine& engine,
                                        const std::vector<std::vector<int32_t>>& prompts,
                                        const SamplingParams& params) {
    nb::gil_scoped_release unlocked;
    std::vector<RequestHandle> handles;
    handles.reserve(prompts.size());
    try {
        for (const auto& ids : prompts)
            handles.push_back(engine.submit(Prompt::tokens(ids), params));
    } catch (...) {
        for (RequestHandle& h : handles)
            h.abort();
        throw;
    }
    std::vector<RequestOutput> outputs;
    for (RequestHandle& h : handles) {
        outputs.push_back(h.wait());
        if (!outputs.back().error.empty()) throw Error(outputs.back().error);
    }
    return outputs;
}

void bind_configs(nb::module_& m) {
    nb::class_<EngineConfig>(m, "EngineConfig",
                             "Every field of tandem::EngineConfig (engine/include/tandem/engine.h)")
        .def("__init__",
             [](EngineConfig* self, nb::kwargs kwargs) {
                 new (self) EngineConfig(with_fields<EngineConfig>(kwargs, "EngineConfig"));
             })
        .def_rw("model_dir", &EngineConfig::model_dir)
        .def_rw("n_threads", &EngineConfig::n_threads)
        .def_rw("pin_threads", &EngineConfig::pin_threads)
        .def_rw("hyperthreads", &EngineConfig::hyperthreads)
        .def_rw("numa", &EngineConfig::numa)
        .def_rw("numa_topology", &EngineConfig::numa_topology)
        .def_rw("context_length", &EngineConfig::context_length)
        .def_rw("quantize", &EngineConfig::quantize)
        .def_rw("cpu_isa", &EngineConfig::cpu_isa)
        .def_rw("device", &EngineConfig::device)
        .def_rw("cuda_graphs", &EngineConfig::cuda_graphs)
        .def_rw("batch_invariant", &EngineConfig::batch_invariant)
        .def_rw("tile_gemm", &EngineConfig::tile_gemm)
        .def_rw("kv_cache_bytes", &EngineConfig::kv_cache_bytes)
        .def_rw("kv_block_size", &EngineConfig::kv_block_size)
        .def_rw("kv_cache_type", &EngineConfig::kv_cache_type)
        .def_rw("max_sequences", &EngineConfig::max_sequences)
        .def_rw("max_step_tokens", &EngineConfig::max_step_tokens)
        .def_rw("max_waiting_requests", &EngineConfig::max_waiting_requests)
        .def_rw("expert_device", &EngineConfig::expert_device)
        .def_rw("gpu_expert_budget", &EngineConfig::gpu_expert_budget)
        .def_rw("gpu_expert_ratio", &EngineConfig::gpu_expert_ratio)
        .def_rw("cache_policy", &EngineConfig::cache_policy)
        .def_rw("planner", &EngineConfig::planner)
        .def_rw("prefetch", &EngineConfig::prefetch)
        .def_rw("hardware_profile", &EngineConfig::hardware_profile)
        .def_rw("calibration_file", &EngineConfig::calibration_file)
        .def_rw("recalibrate", &EngineConfig::recalibrate)
        .def_rw("replay_routing", &EngineConfig::replay_routing)
        .def_rw("replay_predictor", &EngineConfig::replay_predictor)
        .def_rw("warm_profile", &EngineConfig::warm_profile);

    nb::class_<SamplingParams>(m, "SamplingParams",
                               "Every field of tandem::SamplingParams (<tandem/sampling.h>)")
        .def("__init__",
             [](SamplingParams* self, nb::kwargs kwargs) {
                 new (self) SamplingParams(with_fields<SamplingParams>(kwargs, "SamplingParams"));
             })
        .def_rw("n", &SamplingParams::n)
        .def_rw("temperature", &SamplingParams::temperature)
        .def_rw("top_k", &SamplingParams::top_k)
        .def_rw("top_p", &SamplingParams::top_p)
        .def_rw("min_p", &SamplingParams::min_p)
        .def_rw("seed", &SamplingParams::seed)
        .def_rw("max_tokens", &SamplingParams::max_tokens)
        .def_rw("min_tokens", &SamplingParams::min_tokens)
        .def_rw("stop", &SamplingParams::stop)
        .def_rw("stop_token_ids", &SamplingParams::stop_token_ids)
        .def_rw("ignore_eos", &SamplingParams::ignore_eos)
        .def_rw("presence_penalty", &SamplingParams::presence_penalty)
        .def_rw("frequency_penalty", &SamplingParams::frequency_penalty)
        .def_rw("repetition_penalty", &SamplingParams::repetition_penalty)
        .def_rw("logit_bias", &SamplingParams::logit_bias)
        .def_rw("logprobs", &SamplingParams::logprobs)
        .def_rw("prompt_logprobs", &SamplingParams::prompt_logprobs)
        .def_rw("return_routed_experts", &SamplingParams::return_routed_experts)
        .def_rw("routing_lookahead", &SamplingParams::routing_lookahead)
        .def_rw("routing_probabilities", &SamplingParams::routing_probabilities)
        .def_rw("skip_special_tokens", &SamplingParams::skip_special_tokens);
}

void bind_engine(nb::module_& m) {
    nb::class_<Engine>(m, "Engine", "A loaded model and its scheduler (<tandem/engine.h>)")
        .def(
            "__init__",
            [](Engine* self, const std::string& model, nb::kwargs kwargs) {
                EngineConfig c = with_fields<EngineConfig>(kwargs, "EngineConfig");
                c.model_dir = model;
                nb::gil_scoped_release unlocked;
                new (self) Engine(Engine::open(c));
            },
            "model"_a, "kwargs"_a,
            "Engine(model, **fields): opens a model directory or .gguf file; the keyword "
            "arguments are EngineConfig fields (n_threads=2, batch_invariant=True, ...).")
        .def(
            "generate",
            [](Engine& engine, nb::handle prompts, const SamplingParams& params) -> nb::object {
                if (!is_batch(prompts))
                    return nb::cast(generate_all(engine, {token_ids(prompts)}, params).at(0));
                std::vector<std::vector<int32_t>> all;
                for (nb::handle p : prompts)
                    all.push_back(token_ids(p));
                return nb::cast(generate_all(engine, all, params));
            },
            "prompts"_a, "params"_a = SamplingParams(),
            "generate(ids | [ids, ...], params) -> RequestOutput | [RequestOutput, ...]: a list "
            "of prompts is submitted at once and batched together.")
        .def(
            "score",
            [](Engine& engine, nb::handle ids, int64_t start) {
                const std::vector<int32_t> v = token_ids(ids);
                // (fewer than two tokens: the engine's own error)
                if (v.size() >= 2 && (start < 1 || start >= int64_t(v.size())))
                    throw RequestError("score: start " + std::to_string(start) +
                                       " must be in [1, " + std::to_string(v.size()) + ")");
                std::vector<float> logprobs;
                {
                    nb::gil_scoped_release unlocked;
                    logprobs = engine.score(v);
                }
                return std::vector<float>(logprobs.begin() + (start - 1), logprobs.end());
            },
            "ids"_a, "start"_a = 1,
            "score(ids, start=1) -> [logprob of ids[i] given ids[:i] for i in start..len-1]")
        .def(
            "load_weights",
            [](Engine& engine, nb::handle weights) {
                if (nb::isinstance<nb::str>(weights) || nb::hasattr(weights, "__fspath__")) {
                    const std::string dir = nb::cast<std::string>(nb::str(weights));
                    nb::gil_scoped_release unlocked;
                    engine.reload_weights(dir);
                } else {
                    load_weights_from_mapping(engine, weights);
                }
            },
            "weights"_a,
            "load_weights(path | {name: array}): new weights of the same shapes, between two "
            "steps. Arrays (numpy, torch via DLPack; f32, f16, bf16, C-contiguous) are read in "
            "place without a copy and kept referenced until the next load: do not modify them "
            "meanwhile (pass copies of parameters that an optimizer updates).")
        .def(
            "tokenize",
            [](const Engine& engine, const std::string& text, bool add_special_tokens) {
                Prompt p = Prompt::from_text(text);
                p.add_special_tokens = add_special_tokens;
                return engine.tokenize(p);
            },
            "text"_a, "add_special_tokens"_a = true)
        .def(
            "detokenize",
            [](const Engine& engine, nb::handle ids, bool skip_special_tokens) {
                return engine.detokenize(token_ids(ids), skip_special_tokens);
            },
            "ids"_a, "skip_special_tokens"_a = true)
        .def_prop_ro("vocab_size", &Engine::vocab_size)
        .def_prop_ro("context_length", &Engine::context_length)
        .def_prop_ro("eos_token_ids",
                     [](const Engine& e) { return e.model_config().eos_token_ids; })
        .def_prop_ro("model_name", &Engine::model_name)
        .def_prop_ro("thread_count", &Engine::thread_count);
}

}  // namespace

}  // namespace tandem::python

NB_MODULE(tandem, m) {
    using namespace tandem;
    m.doc() = "Tandem's C++ engine: generate, score and load weights from Python";
    m.attr("__version__") = std::string(version());
    // The engine's three exception types (unrelated in C++) as Python classes; any other C++
    // exception becomes nanobind's default (RuntimeError, ValueError, ...).
    nb::exception<Error>(m, "Error", PyExc_RuntimeError);
    nb::exception<QueueFullError>(m, "QueueFullError", PyExc_RuntimeError);
    nb::exception<RequestError>(m, "RequestError", PyExc_ValueError);
    python::bind_configs(m);
    python::bind_outputs(m);
    python::bind_engine(m);
}

// What generate() returns, as read-only Python objects: RequestOutput -> Completion per sample
// -> token ids, per-token logprobs, finish reason, routed experts (as numpy arrays, so that a
// trainer can replay the routing without a loop over Python lists).
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include "python/src/bindings.h"

namespace nb = nanobind;

namespace tandem::python {

namespace {

// A numpy array that owns a copy of `values`, of `shape`.
template <class T>
nb::object to_numpy(const std::vector<T>& values, std::vector<size_t> shape) {
    auto* copy = new std::vector<T>(values);
    nb::capsule owner(copy, [](void* p) noexcept { delete static_cast<std::vector<T>*>(p); });
    return nb::cast(nb::ndarray<nb::numpy, T>(copy->data(), shape.size(), shape.data(), owner));
}

// The sampled token's logprob per generated token; None when logprobs were not asked for.
nb::object sampled_logprobs(const Completion& c) {
    if (c.logprobs.empty() && !c.token_ids.empty()) return nb::none();
    std::vector<float> out;
    for (const TokenLogprob& lp : c.logprobs)
        out.push_back(lp.logprob);
    return nb::cast(out);
}

}  // namespace

void bind_outputs(nb::module_& m) {
    nb::class_<RoutedExperts>(m, "RoutedExperts",
                              "The experts every MoE layer chose per position: the prompt, then "
                              "each generated token fed back (the last one has none)")
        .def_ro("layers", &RoutedExperts::layers)
        .def_ro("top_k", &RoutedExperts::top_k)
        .def_prop_ro("experts",
                     [](const RoutedExperts& r) {
                         return to_numpy(r.experts, {size_t(r.positions()), size_t(r.n_layers),
                                                     size_t(r.top_k)});
                     })
        .def_prop_ro("weights",
                     [](const RoutedExperts& r) {
                         return to_numpy(r.weights, {size_t(r.positions()), size_t(r.n_layers),
                                                     size_t(r.top_k)});
                     })
        .def_prop_ro("positions", &RoutedExperts::positions);

    nb::class_<Completion>(m, "Completion", "One sample of a request")
        .def_ro("index", &Completion::index)
        .def_ro("token_ids", &Completion::token_ids)
        .def_ro("text", &Completion::text)
        .def_prop_ro("logprobs", &sampled_logprobs,
                     "logprob of each generated token under the model's raw distribution "
                     "(None unless SamplingParams.logprobs >= 0)")
        .def_prop_ro("top_logprobs",
                     [](const Completion& c) {
                         std::vector<std::vector<std::pair<int32_t, float>>> out;
                         for (const TokenLogprob& lp : c.logprobs)
                             out.push_back(lp.top);
                         return out;
                     })
        .def_prop_ro("finish_reason",
                     [](const Completion& c) -> nb::object {
                         if (!c.finish_reason) return nb::none();
                         return nb::str(std::string(finish_reason_name(*c.finish_reason)).c_str());
                     })
        .def_ro("stop_reason", &Completion::stop_reason)
        .def_prop_ro("routed_experts", [](const Completion& c) -> nb::object {
            if (c.routed_experts.n_layers == 0) return nb::none();
            return nb::cast(c.routed_experts);
        });

    nb::class_<RequestOutput>(m, "RequestOutput", "What generate() returns for one prompt")
        .def_ro("prompt_token_ids", &RequestOutput::prompt_token_ids)
        .def_ro("completions", &RequestOutput::completions)
        .def_ro("prompt_tokens", &RequestOutput::prompt_tokens)
        .def_ro("completion_tokens", &RequestOutput::completion_tokens)
        .def_prop_ro("prompt_logprobs", [](const RequestOutput& r) {
            std::vector<float> out;
            for (const TokenLogprob& lp : r.prompt_logprobs)
                out.push_back(lp.logprob);
            return out;
        });
}

}  // namespace tandem::python
